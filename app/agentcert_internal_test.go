package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store/storetest"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAgentCertRenewedWhileServing: the agent API certificate (here with a
// 3 s life) is renewed by the running region before it expires, and a TLS
// listener using agentCert.GetCertificate serves the new one at once: an
// agent-style client that trusts only the cluster CA still connects after
// the first certificate expired.
func TestAgentCertRenewedWhileServing(t *testing.T) {
	// Not parallel: it sleeps through a short certificate life and
	// checks what was served when; it runs before the parallel tests.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.New(t)
	const life = 3 * time.Second
	ip := net.ParseIP("127.0.0.1")
	first, err := issueAgentTLS(ctx, st, "m1", ip, "https://127.0.0.1:8081", life)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ac := newAgentCert(first.cert, life, func(ctx context.Context) (*tls.Certificate, error) {
		next, err := issueAgentTLS(ctx, st, "m1", ip, "https://127.0.0.1:8081", life)
		return next.cert, err
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	done := make(chan struct{})
	go func() { defer close(done); ac.run(ctx) }()
	defer func() { cancel(); <-done }()

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: ac.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(st.CA().Cert)
	served := func() (*x509.Certificate, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0], nil
	}
	if c, err := served(); err != nil || c.SerialNumber.Cmp(first.cert.Leaf.SerialNumber) != 0 {
		t.Fatalf("first certificate: %v", err)
	}
	time.Sleep(time.Until(first.cert.Leaf.NotAfter) + 300*time.Millisecond)
	c, err := served()
	if err != nil {
		t.Fatalf("handshake after the first certificate expired: %v\n%s", err, logs.String())
	}
	if c.SerialNumber.Cmp(first.cert.Leaf.SerialNumber) == 0 || !c.NotAfter.After(first.cert.Leaf.NotAfter) {
		t.Fatalf("still serving the first certificate")
	}
	if !strings.Contains(logs.String(), "agent API certificate renewed") {
		t.Errorf("renewal not logged: %s", logs.String())
	}
}
