package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
)

// TestJoinTrustsOnlyThePinnedCA: after `lpmos join` fetched the cluster CA
// and checked it against the token's pin, every later call verifies the
// server against that CA. A server that hands out the right (public) CA
// but presents a certificate the CA did not issue never receives the join
// request; one whose certificate the CA issued does; --ca-cert adds the
// CA of a member's own --tls-cert.
func TestJoinTrustsOnlyThePinnedCA(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	caAnswer, _ := json.Marshal(ui.CAResponse{CA: string(ca.CertPEM), SHA256: ca.Fingerprint()})
	fake := func(t *testing.T, cert *tls.Certificate) (*httptest.Server, *atomic.Int32) {
		var joins atomic.Int32
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "GET" && r.URL.Path == "/api/v1/cluster/ca" {
				_, _ = w.Write(caAnswer)
				return
			}
			joins.Add(1)
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"join denied: test member"}`))
		}))
		if cert != nil {
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv, &joins
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignServing("member", &key.PublicKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	caIssued, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	token := store.FormatJoinToken(ca.Fingerprint(), "tok1", "secret")
	join := func(t *testing.T, url string, extra ...string) error {
		args, _, _ := serveArgs(t, filepath.Join(t.TempDir(), "j"))
		_, _, err := cliIn(append(append([]string{"join", url, "--token", token, "--region-id", "dc2", "--name", "j1"}, args[1:]...), extra...)...)
		return err
	}

	t.Run("impostor certificate", func(t *testing.T) {
		srv, joins := fake(t, nil) // httptest's own certificate: not from the CA
		err := join(t, srv.URL)
		if err == nil || !strings.Contains(err.Error(), "not issued by the pinned cluster CA") || !strings.Contains(err.Error(), "--ca-cert") {
			t.Fatalf("join through an impostor: %v", err)
		}
		if n := joins.Load(); n != 0 {
			t.Fatalf("the impostor received %d join calls", n)
		}
	})
	t.Run("certificate from the pinned CA", func(t *testing.T) {
		srv, joins := fake(t, &caIssued)
		err := join(t, srv.URL)
		if err == nil || !strings.Contains(err.Error(), "join denied: test member") {
			t.Fatalf("join through a CA-certified member: %v", err)
		}
		if n := joins.Load(); n != 1 {
			t.Fatalf("the member received %d join calls, want 1", n)
		}
	})
	t.Run("own --tls-cert with --ca-cert", func(t *testing.T) {
		srv, joins := fake(t, nil)
		caFile := filepath.Join(t.TempDir(), "own-ca.pem")
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := join(t, srv.URL, "--ca-cert", caFile); err == nil || !strings.Contains(err.Error(), "join denied") {
			t.Fatalf("join with --ca-cert: %v", err)
		}
		if n := joins.Load(); n != 1 {
			t.Fatalf("the member received %d join calls, want 1", n)
		}
	})
}
