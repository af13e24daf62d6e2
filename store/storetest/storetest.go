// Package storetest starts a real embedded etcd member for tests.
package storetest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/lpmos/lpmos/store"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Config returns a store config for an embedded member in dir on free
// loopback ports.
func Config(t testing.TB, dir string) store.Config {
	return store.Config{
		DataDir:   dir,
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", FreePort(t)),
		PeerURL:   fmt.Sprintf("https://127.0.0.1:%d", FreePort(t)),
		Logger:    slog.New(slog.DiscardHandler),
	}
}

// ClientOf returns a config that connects to the member cfg starts as an
// external client, with the member's certificate (mutual TLS).
func ClientOf(cfg store.Config) store.Config {
	pki := filepath.Join(cfg.DataDir, "pki")
	return store.Config{
		Endpoints: []string{cfg.ClientURL},
		CAFile:    filepath.Join(pki, "ca.crt"),
		CertFile:  filepath.Join(pki, "member.crt"),
		KeyFile:   filepath.Join(pki, "member.key"),
		Logger:    cfg.Logger,
	}
}

// New starts an embedded etcd member in a temp dir and closes it when the
// test ends.
func New(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), Config(t, t.TempDir()))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
