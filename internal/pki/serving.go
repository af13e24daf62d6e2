package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// ServingCertFile and ServingKeyFile are the control plane's HTTPS
// certificate and key in a PKI directory.
const (
	ServingCertFile = "serving.crt"
	ServingKeyFile  = "serving.key"
)

// SignServing issues a server-only certificate (for the control plane's
// HTTPS) for pub, valid for lifetime, with hosts (IPs or DNS names) plus
// loopback as SANs.
func (ca *CA) SignServing(name string, pub any, hosts []string, lifetime time.Duration) ([]byte, error) {
	if ca.Key == nil {
		return nil, errors.New("pki: this member holds no CA key")
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("pki: serving certificate lifetime %s must be positive", lifetime)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"lpmos"}},
		NotBefore:    now.Add(-min(time.Minute, lifetime/10)), // some clock skew; renewal is at 2/3 of NotBefore..NotAfter
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	setSANs(tmpl, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign serving certificate: %w", err)
	}
	return pemBlock("CERTIFICATE", der), nil
}
