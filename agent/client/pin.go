package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

// PinError means the agent API's certificate chain does not lead to the CA
// pinned on the kernel line (lpmos_ca=): the agent refuses to talk to it.
type PinError struct {
	Pin    string // the pinned CA, as on the kernel line (sha256:<hex>)
	Reason string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("the agent API's TLS certificate is not trusted: %s (pinned CA %s=%s)", e.Reason, wire.ParamCA, e.Pin)
}

// IsPin reports whether err is (or wraps) a *PinError.
func IsPin(err error) bool {
	var pe *PinError
	return errors.As(err, &pe)
}

// ParsePin checks a CA pin ("sha256:" and 64 hex digits) and returns the
// raw digest.
func ParsePin(pin string) ([]byte, error) {
	h, ok := strings.CutPrefix(pin, wire.CAPinPrefix)
	if !ok {
		return nil, fmt.Errorf("CA pin %q: want %s<64 hex digits> (the sha256 of the CA certificate's DER)", pin, wire.CAPinPrefix)
	}
	sum, err := hex.DecodeString(h)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("CA pin %q: want %s<64 hex digits> (the sha256 of the CA certificate's DER)", pin, wire.CAPinPrefix)
	}
	return sum, nil
}

// PinnedTLSConfig returns a TLS client configuration for host that trusts
// exactly one CA: the certificate the server sends in its chain whose DER
// sha256 is pin. The server's certificate must chain to it and name host
// (a DNS name or an IP address).
// No system roots are used (the agent's initramfs has none).
//
// Validity times are checked at the local clock clamped into the leaf's
// validity window: a machine's RTC may be far off before anything set it,
// and the pin, not the clock, is what makes the CA trusted.
func PinnedTLSConfig(pin, host string) (*tls.Config, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		// Go's own verification would need roots; VerifyConnection below
		// does the whole verification against the pinned CA.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, want, pin, host)
		},
	}, nil
}

func verifyPinned(cs tls.ConnectionState, want []byte, pin, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return &PinError{Pin: pin, Reason: "the server sent no certificate"}
	}
	var ca *x509.Certificate
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		sum := sha256.Sum256(c.Raw)
		if string(sum[:]) == string(want) {
			ca = c
		} else {
			inter.AddCert(c)
		}
	}
	if ca == nil {
		return &PinError{Pin: pin, Reason: "no certificate in the server's chain has that sha256 (wrong pin, or another server)"}
	}
	leaf := cs.PeerCertificates[0]
	now := time.Now()
	if now.Before(leaf.NotBefore) {
		now = leaf.NotBefore
	}
	if now.After(leaf.NotAfter) {
		now = leaf.NotAfter
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       host,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return &PinError{Pin: pin, Reason: err.Error()}
	}
	return nil
}

// PinnedHTTPClient is an HTTP client whose HTTPS connections trust only
// the pinned CA (see PinnedTLSConfig). Plain http:// URLs are refused: a
// pinned agent never sends its tokens in the clear.
func PinnedHTTPClient(pin string) (*http.Client, error) {
	if _, err := ParsePin(pin); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	// Each connection verifies the host it dialled (a TLS client does not
	// record an IP address as its server name).
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		cfg, err := PinnedTLSConfig(pin, host)
		if err != nil {
			return nil, err
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, Config: cfg}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: &httpsOnly{base: tr, pin: pin}}, nil
}

type httpsOnly struct {
	base http.RoundTripper
	pin  string
}

func (t *httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, &PinError{Pin: t.pin, Reason: fmt.Sprintf("%s is not https: with a pinned CA the agent only talks HTTPS", req.URL.Redacted())}
	}
	return t.base.RoundTrip(req)
}
