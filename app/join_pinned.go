package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// pinnedJoinClient is the client of every join call after the CA fetch:
// it trusts the cluster CA the token pinned (checked against the pin just
// before) and, when the member serves an operator's own certificate
// (--tls-cert), the CA in caFile (--ca-cert). No InsecureSkipVerify: a
// server that is not that member is refused before the join request (and
// its proof over the CSR) is sent.
func pinnedJoinClient(ca *x509.Certificate, caFile string) (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in it", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: 90 * time.Second, Transport: tr}, nil
}

// joinTLSHint explains a join call refused by certificate verification.
func joinTLSHint(err error) error {
	var verify *tls.CertificateVerificationError
	var host x509.HostnameError
	switch {
	case errors.As(err, &host):
		return fmt.Errorf("%w: the member's HTTPS certificate does not name this host: join through a URL it covers (its host name, advertise IP or localhost)", err)
	case errors.As(err, &verify):
		return fmt.Errorf("%w: the member's HTTPS certificate is not issued by the pinned cluster CA; nothing was sent. If that member serves its own --tls-cert, add --ca-cert with that certificate's CA", err)
	}
	return err
}
