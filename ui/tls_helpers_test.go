package ui_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// newLiveTLS is newLive over HTTPS, the way `lpmos serve` runs by default:
// a certificate issued by a (test) cluster CA handed out by GetCertificate.
// The env's client trusts that CA; e.spki pins the certificate for chromium.
func newLiveTLS(t testing.TB) *liveEnv {
	t.Helper()
	st := storetest.New(t)
	tok, _, err := st.EnsureAdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seedCreatable(t, st) // ui/create_checks_test.go: region dc1 known, image ubuntu 22.04
	ca, err := pki.NewCA("test cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	cert := servingCert(t, ca, browsers.key) // the key the package's chromium pins (browserPool)
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	e := serveLive(t, st, tok, ui.Config{Store: st, Health: reg, Version: "test", Logger: slog.New(slog.DiscardHandler),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	sum := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	e.spki = base64.StdEncoding.EncodeToString(sum[:])
	e.ca = ca
	return e
}

// unpinnedTLS serves the dashboard of e over HTTPS with a certificate of
// e's test CA (newLiveTLS) for a fresh key, one chromium has no pin for;
// it returns the URL.
func unpinnedTLS(t testing.TB, e *liveEnv) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := servingCert(t, e.ca, key)
	srv := httptest.NewUnstartedServer(e.srv.Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// servingCert is a one-hour serving certificate of ca for key.
func servingCert(t testing.TB, ca *pki.CA, key *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	certPEM, err := ca.SignServing("test", &key.PublicKey, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
