package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
)

// handshake returns the certificate a TLS server using c hands out.
func handshake(t *testing.T, c *servingCert, pool *x509.CertPool) *x509.Certificate {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: c.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("handshake with the cluster CA: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestServingCertRenewsWithoutRestart: a certificate is renewed in the
// background at 2/3 of its life and the next handshake gets the new one;
// a certificate on disk is reused while good and reissued when it lacks a
// host, was signed by another CA, or is due.
func TestServingCertRenewsWithoutRestart(t *testing.T) {
	// Not parallel: it sleeps through a short certificate life and
	// checks what was served when; it runs before the parallel tests.
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	dir := pki.Dir(t.TempDir())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := &servingCert{dir: dir, hosts: []string{"node-1", "10.9.8.7"}, lifetime: 3 * time.Second, sign: caSigner(ca, "n1"), log: log}
	issued := time.Now()
	if err := c.ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := handshake(t, c, pool)
	for _, h := range []string{"node-1", "10.9.8.7", "localhost", "127.0.0.1", "::1"} {
		if first.VerifyHostname(h) != nil {
			t.Errorf("certificate does not cover %s", h)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	// x509 stamps are whole seconds: NotBefore (now-0.3 s) and NotAfter
	// (now+3 s) truncated put 2/3 of the life between 1.0 and 1.7 s after
	// the issue, so "not yet" is asserted only before 1 s has passed.
	time.Sleep(500 * time.Millisecond)
	early := handshake(t, c, pool)
	if since := time.Since(issued); since < time.Second && !early.Equal(first) {
		t.Fatalf("certificate renewed %v after it was issued, before 2/3 of its life", since)
	}
	time.Sleep(time.Until(issued.Add(2500 * time.Millisecond))) // past 2/3 of 3s
	second := handshake(t, c, pool)
	cancel()
	<-done
	if second.Equal(first) {
		t.Fatal("no new certificate after 2/3 of its life")
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires at %s, not after the first (%s)", second.NotAfter, first.NotAfter)
	}
	onDisk, err := os.ReadFile(dir.Path(pki.ServingCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if disk, _ := pki.ParseCertPEM(onDisk); disk == nil || !disk.Equal(second) {
		t.Error("the renewed certificate is not the one on disk")
	}

	other, err := pki.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		hosts   []string
		lifeNow time.Duration // lifetime of the certificate on disk
		sign    signFunc
		reissue bool
	}{
		{"good one is kept", []string{"node-1"}, time.Hour, caSigner(ca, "n1"), false},
		{"new host", []string{"node-1", "node-1.example"}, time.Hour, caSigner(ca, "n1"), true},
		{"due for renewal", []string{"node-1"}, 30 * time.Millisecond, caSigner(ca, "n1"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := pki.Dir(t.TempDir())
			if err := pki.WriteFile(d.Path(pki.CACertFile), ca.CertPEM, 0o644); err != nil {
				t.Fatal(err)
			}
			c := &servingCert{dir: d, hosts: []string{"node-1"}, lifetime: tc.lifeNow, sign: tc.sign, log: log}
			if err := c.ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			before := c.current().Leaf
			time.Sleep(40 * time.Millisecond)
			c2 := &servingCert{dir: d, hosts: tc.hosts, lifetime: time.Hour, sign: caSigner(ca, "n1"), log: log}
			if err := c2.ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := !c2.current().Leaf.Equal(before); got != tc.reissue {
				t.Errorf("reissued = %v, want %v", got, tc.reissue)
			}
		})
	}
	t.Run("signed by another CA", func(t *testing.T) {
		d := pki.Dir(t.TempDir())
		if err := pki.WriteFile(d.Path(pki.CACertFile), ca.CertPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		c := &servingCert{dir: d, hosts: []string{"node-1"}, lifetime: time.Hour, sign: caSigner(other, "n1"), log: log}
		if err := c.ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
		c2 := &servingCert{dir: d, hosts: []string{"node-1"}, lifetime: time.Hour, sign: caSigner(ca, "n1"), log: log}
		if err := c2.ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
		if c2.current().Leaf.CheckSignatureFrom(ca.Cert) != nil {
			t.Error("a certificate of another CA was kept")
		}
	})
}

// TestLocalCAForExternalEtcd: with an external etcd (no cluster CA) serve
// creates a CA of its own in <data-dir>/pki once (key 0600) and reuses it.
func TestLocalCAForExternalEtcd(t *testing.T) {
	dir := pki.Dir(t.TempDir() + "/pki")
	ca1, err := localCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dir.Path(pki.CAKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", err, info)
	}
	ca2, err := localCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.Equal(ca2.Cert) {
		t.Fatal("a second start made a new CA")
	}
	if err := os.Remove(dir.Path(pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := localCA(dir); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("CA without its key: %v, want an error naming --tls-cert", err)
	}
}
