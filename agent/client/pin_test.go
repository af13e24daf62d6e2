package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
)

// testCA is a CA and a serving certificate it issued for ips.
type testCA struct {
	ca   *x509.Certificate
	leaf tls.Certificate
}

func newTestCA(t *testing.T, name string, ips ...net.IP) testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "region"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca: ca, leaf: tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}}
}

func pinOf(der []byte) string {
	sum := sha256.Sum256(der)
	return wire.CAPinPrefix + hex.EncodeToString(sum[:])
}

// TestPinnedClient runs real agent calls against an HTTPS server whose
// certificate chains to a CA, with pins that must and must not be trusted.
func TestPinnedClient(t *testing.T) {
	loop := net.IPv4(127, 0, 0, 1)
	good := newTestCA(t, "cluster CA", loop)
	other := newTestCA(t, "another CA", loop)
	wrongHost := newTestCA(t, "cluster CA for another host", net.IPv4(10, 9, 9, 9))
	tests := []struct {
		name    string
		serve   testCA
		pin     func(srvURL string) (pin, url string)
		wantErr string // "" = the call succeeds
	}{
		{name: "right pin", serve: good,
			pin: func(u string) (string, string) { return pinOf(good.ca.Raw), u }},
		{name: "pin of another CA", serve: good, wantErr: "no certificate in the server's chain has that sha256",
			pin: func(u string) (string, string) { return pinOf(other.ca.Raw), u }},
		{name: "server of another CA", serve: other, wantErr: "no certificate in the server's chain has that sha256",
			pin: func(u string) (string, string) { return pinOf(good.ca.Raw), u }},
		{name: "pin of the leaf, not the CA", serve: good, wantErr: "no certificate in the server's chain has that sha256",
			pin: func(u string) (string, string) { return pinOf(good.leaf.Certificate[0]), u }},
		{name: "certificate for another host", serve: wrongHost, wantErr: "127.0.0.1",
			pin: func(u string) (string, string) { return pinOf(wrongHost.ca.Raw), u }},
		{name: "plain http with a pin", serve: good, wantErr: "not https",
			pin: func(u string) (string, string) {
				return pinOf(good.ca.Raw), strings.Replace(u, "https://", "http://", 1)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"task_id":"t1","status":"pending_approval"}`))
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{tt.serve.leaf}}
			srv.StartTLS()
			defer srv.Close()
			pin, url := tt.pin(srv.URL)
			hc, err := PinnedHTTPClient(pin)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			c := New(Options{BaseURL: url, HTTPClient: hc, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				Backoff: retry.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}})
			// A refusal must come at once, not after retries until the
			// deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = c.ReportHardware(ctx, wire.HardwareReport{TaskID: "t1", MACAddress: "52:54:00:00:00:01"})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("call with the right pin: %v", err)
				}
				if calls.Load() != 1 {
					t.Fatalf("server saw %d calls, want 1", calls.Load())
				}
				return
			}
			if err == nil {
				t.Fatal("call succeeded, want a refusal")
			}
			if !IsPin(err) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), pin) {
				t.Fatalf("err = %v\nwant a PinError naming %q and the pin", err, tt.wantErr)
			}
			if strings.Contains(logs.String(), "retrying") {
				t.Fatalf("a pin refusal was retried:\n%s", logs.String())
			}
			if calls.Load() != 0 {
				t.Fatalf("the untrusted server got %d requests", calls.Load())
			}
		})
	}
}

func TestParsePin(t *testing.T) {
	ok := wire.CAPinPrefix + strings.Repeat("0f", 32)
	if _, err := ParsePin(ok); err != nil {
		t.Fatalf("ParsePin(%q): %v", ok, err)
	}
	for _, bad := range []string{"", strings.Repeat("0f", 32), "sha1:" + strings.Repeat("0f", 20),
		wire.CAPinPrefix + strings.Repeat("0f", 31), wire.CAPinPrefix + strings.Repeat("zz", 32)} {
		if _, err := PinnedHTTPClient(bad); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
			t.Errorf("PinnedHTTPClient(%q) = %v, want a refusal", bad, err)
		}
	}
}
