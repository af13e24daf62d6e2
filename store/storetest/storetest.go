// Package storetest starts a real embedded etcd member for tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
)

// FreePort returns a loopback port, free for both TCP and UDP a moment ago,
// for a server the test starts later under that number (etcd and lpmos
// need the number before they listen). It is drawn at random below the
// kernel's ephemeral range (32768-60999 by default): a port from inside it
// can be taken by any outgoing connection before the server binds it,
// which happened when a member's port was handed to another member's
// client connection. A port is handed out once per test process: parallel
// tests would otherwise race between one drawing a port and binding it and
// another drawing the same port meanwhile. Across processes (`go test
// ./...` runs the packages' test binaries at once, and a killed run's
// children may still run) a port is also reserved by an flock on a file
// named after it in os.TempDir()/lpmos-test-ports, held until the test
// ends (the kernel drops it when the process dies).
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		if !reservePort(t, port) {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("find free port: no free loopback port in 20000-31999 after 100 tries")
	return 0
}

// handedOut holds the ports FreePort returned in this process: the one
// piece of state the parallel tests of a package share.
var handedOut sync.Map

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

// reservePort takes port's lock file for the rest of the test; false when
// another process holds it. Without a usable lock directory the port is
// not reserved across processes (true): the bind checks still apply.
func reservePort(t testing.TB, port int) bool {
	dir := filepath.Join(os.TempDir(), "lpmos-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	_ = os.Chmod(dir, 0o1777) // shared by the users that run tests; MkdirAll's mode goes through umask
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return !errors.Is(err, fs.ErrPermission) // another user's lock file: theirs
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	t.Cleanup(func() { f.Close() }) // closing drops the flock
	return true
}

// RunProgressPath runs region dc1's progress path (as the agent API runs
// it: window <= 0 is the default coalescing window, persist the
// within-stage write interval) until the test ends, and returns it once
// its cache is loaded.
func RunProgressPath(t testing.TB, s *store.Store, window, persist time.Duration) *store.ProgressPath {
	t.Helper()
	pp := s.NewProgressPath("dc1", window)
	pp.SetPersistInterval(persist)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !pp.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("progress cache not ready within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return pp
}
