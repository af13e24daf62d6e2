package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// logBuffer collects a store's log lines.
type logBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newLogBuffer() *logBuffer { return &logBuffer{mu: make(chan struct{}, 1)} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

func openShortCertMember(t *testing.T, ttl time.Duration, logs *logBuffer) (*Store, Config, *bool) {
	t.Helper()
	cfg := Config{
		DataDir:   t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", cakeyFreePort(t)),
		PeerURL:   fmt.Sprintf("https://127.0.0.1:%d", cakeyFreePort(t)),
		// A short life: renewed at 2/3 of it while the test watches.
		MemberCertTTL: ttl,
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	closeIt := true
	t.Cleanup(func() {
		if closeIt {
			_ = s.Close()
		}
	})
	return s, cfg, &closeIt
}

// handshake connects to rawURL's host with a client certificate and
// returns the certificate the server presented, or the handshake (or first
// read) error.
func handshake(t *testing.T, rawURL string, pool *x509.CertPool, client tls.Certificate) (*x509.Certificate, error) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client}, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// TLS 1.3: the server checks the client certificate (and the CRL)
	// after the client finished; a refusal shows on the first read.
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return nil, err
	}
	return conn.ConnectionState().PeerCertificates[0], nil
}

func isTimeout(err error) bool {
	ne, ok := err.(interface{ Timeout() bool })
	return ok && ne.Timeout()
}

func memberPair(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", pki.MemberCertFile), filepath.Join(dir, "pki", pki.MemberKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMemberCertRenewedWhileRunning: a member whose certificate lives 3 s
// renews it in place (same key, same CN) before it expires; etcd's peer
// and client listeners present the new one to new connections without a
// restart, and after the first certificate expired, new connections (a
// fresh client with the renewed certificate) and the store's own client
// still work.
func TestMemberCertRenewedWhileRunning(t *testing.T) {
	ctx := context.Background()
	logs := newLogBuffer()
	s, cfg, _ := openShortCertMember(t, 3*time.Second, logs)
	first, err := readCert(s.tls.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if life := first.NotAfter.Sub(time.Now()); life > 4*time.Second {
		t.Fatalf("member certificate lives %s, want the configured 3 s", life)
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.Load().Cert)

	var renewed *x509.Certificate
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := readCert(s.tls.CertFile)
		if err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the member certificate was not renewed within 10 s (expires %s)\n%s", first.NotAfter, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if renewed.Subject.CommonName != first.Subject.CommonName || !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate CN %q expires %s; first CN %q expires %s", renewed.Subject.CommonName, renewed.NotAfter, first.Subject.CommonName, first.NotAfter)
	}
	// Wait until the first certificate has expired.
	time.Sleep(time.Until(first.NotAfter) + 200*time.Millisecond)
	for name, u := range map[string]string{"client": cfg.ClientURL, "peer": cfg.PeerURL} {
		served, err := handshake(t, u, pool, memberPair(t, cfg.DataDir))
		if err != nil {
			t.Fatalf("%s listener after renewal: %v", name, err)
		}
		if served.SerialNumber.Cmp(first.SerialNumber) == 0 || !served.NotAfter.After(first.NotAfter) {
			t.Fatalf("%s listener still presents the first certificate (serial %x)", name, served.SerialNumber)
		}
		if time.Now().After(served.NotAfter) {
			t.Fatalf("%s listener presents an expired certificate", name)
		}
	}
	// The store's own client and a new client with the renewed files work.
	if _, err := s.cli.Put(ctx, "/test/renewed", "ok"); err != nil {
		t.Fatalf("the member's client after renewal: %v", err)
	}
	tc, err := s.tls.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.ClientURL}, TLS: tc, DialTimeout: 3 * time.Second, Logger: newZap(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if r, err := fresh.Get(gctx, "/test/renewed"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("a new client with the renewed certificate: %v", err)
	}
	if !strings.Contains(logs.String(), "member certificate renewed") {
		t.Error("the renewal is not logged")
	}
	// Every certificate the member had is recorded for revocation.
	r, err := s.cli.Get(ctx, prefixMemberCerts+first.Subject.CommonName+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count < 2 {
		t.Fatalf("recorded certificates of %s: %v %v", first.Subject.CommonName, r, err)
	}
}

// TestRevokedCertRefusedAtHandshake: a member certificate whose user is
// revoked (what removing its member does) is refused by etcd's client and
// peer listeners at the TLS handshake once the CRL follows, while the
// member's own certificate still works; the CRL is signed by the cluster
// CA and survives a restart.
func TestRevokedCertRefusedAtHandshake(t *testing.T) {
	ctx := context.Background()
	logs := newLogBuffer()
	s, cfg, closeOnCleanup := openShortCertMember(t, time.Hour, logs)
	ca, err := s.signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	// A second member's certificate ("ghost"), as an admission issues it.
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("ghost")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignMemberFor("ghost@0001", csr.PublicKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := registerCertPEM(ctx, s.cli, certPEM); err != nil {
		t.Fatal(err)
	}
	ghost, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{cfg.ClientURL, cfg.PeerURL} {
		if _, err := handshake(t, u, pool, ghost); err != nil {
			t.Fatalf("ghost's certificate before revocation, %s: %v", u, err)
		}
	}
	if n, err := revokeCertsOf(ctx, s.cli, "ghost@0001"); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	for _, u := range []string{cfg.ClientURL, cfg.PeerURL} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := handshake(t, u, pool, ghost)
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ghost's revoked certificate still accepted by %s after 5 s", u)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := handshake(t, u, pool, memberPair(t, cfg.DataDir)); err != nil {
			t.Fatalf("the member's own certificate at %s: %v", u, err)
		}
	}
	if !strings.Contains(logs.String(), "transport: certificate serial") {
		t.Errorf("etcd did not log the revoked certificate\n%s", logs.String())
	}
	// The CRL is the cluster CA's and lists the serial.
	crlPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "pki", CRLFile))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(crlPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL not signed by the cluster CA: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(ghost.Leaf.SerialNumber) != 0 {
		t.Fatalf("CRL entries %+v", crl.RevokedCertificateEntries)
	}
	// After a restart the revocation holds from the first handshake.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	*closeOnCleanup = false
	s2, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := handshake(t, cfg.ClientURL, pool, ghost); err == nil {
		t.Fatal("the revoked certificate is accepted after a restart")
	}
}

// TestExpiredMemberCertRenewedBeforeStart: a member without the CA key on
// disk (as a joined member) that was down past its certificate's expiry
// renews it from the cached sealed CA record before etcd starts, and
// serves again.
func TestExpiredMemberCertRenewedBeforeStart(t *testing.T) {
	ctx := context.Background()
	logs := newLogBuffer()
	s, cfg, closeOnCleanup := openShortCertMember(t, time.Hour, logs)
	ca, err := s.signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The renewal loop caches the sealed CA record at start.
	cache := filepath.Join(cfg.DataDir, "pki", sealedCACacheFile)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(cache); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 5 s", sealedCACacheFile)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	*closeOnCleanup = false
	// Down past the certificate's expiry, and no ca.key on disk.
	if err := os.Remove(filepath.Join(cfg.DataDir, "pki", pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	old, err := readCert(filepath.Join(cfg.DataDir, "pki", pki.MemberCertFile))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "pki", pki.MemberKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := ca.SignMemberFor(old.Subject.CommonName, &key.PublicKey, []string{"127.0.0.1"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(filepath.Join(cfg.DataDir, "pki", pki.MemberCertFile), expired, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)

	s2, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("restart after the certificate expired: %v\n%s", err, logs.String())
	}
	defer s2.Close()
	if s2.ca.Load().Key != nil {
		t.Fatal("the test meant a member without ca.key")
	}
	cert, err := readCert(s2.tls.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().After(cert.NotAfter) || cert.Subject.CommonName != old.Subject.CommonName {
		t.Fatalf("certificate after restart: CN %q expires %s", cert.Subject.CommonName, cert.NotAfter)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s2.cli.Put(pctx, "/test/after-outage", "ok"); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
	if !strings.Contains(logs.String(), "member certificate renewed before start") {
		t.Error("the renewal before start is not logged")
	}
}
