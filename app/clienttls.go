package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/lpmos/lpmos/internal/pki"
)

// httpClient is the CLI's client for the control plane: over https it
// trusts --ca-cert, else <data-dir>/pki/ca.crt when there is one (on the
// node itself), else the system's CAs.
func (o *clientOptions) httpClient() (*http.Client, error) {
	if !strings.HasPrefix(strings.ToLower(o.server), "https://") {
		return &http.Client{}, nil
	}
	path := o.caCert
	if path == "" {
		def := filepath.Join(o.dataDir, "pki", pki.CACertFile)
		if _, err := os.Stat(def); err == nil {
			path = def
		}
	}
	if path == "" {
		return &http.Client{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in it (want the cluster's ca.crt from <data-dir>/pki on a member)", path)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// connectHint says what to do about a failed call to the control plane.
func connectHint(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown) || (errors.As(err, &verify) && !errors.As(err, &host) && !errors.As(err, &invalid)):
		return "the control plane's certificate is not signed by a CA this CLI trusts: add --ca-cert <ca.crt> (or LPMOS_CA_CERT) with the cluster CA from <data-dir>/pki/ca.crt of a member"
	case errors.As(err, &host):
		return "the control plane's certificate does not name this host: use --server with a name or address it covers (localhost, the node's host name or advertise IP)"
	case errors.As(err, &invalid):
		return "the control plane's certificate is not valid now (expired?): check the clocks, restart lpmos serve to renew it"
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "the control plane serves plain HTTP (--tls=off): use --server http://..."
	}
	return "is lpmos serve running? see --server"
}
