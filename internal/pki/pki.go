// Package pki is the cluster's small certificate authority: one long-lived
// ECDSA P-256 CA per cluster, and a certificate per etcd member that serves
// and authenticates both peer and client traffic (mutual TLS).
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside a member's PKI directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	MemberCertFile = "member.crt"
	MemberKeyFile  = "member.key"
)

// Lifetimes: the CA outlives any realistic cluster; member certificates
// are short-lived, renewed by the running member (store/membercerts.go)
// and re-issued on start when they come close to expiry or lack a host.
const (
	caLifetime = 20 * 365 * 24 * time.Hour
	// DefaultMemberLifetime is a member certificate's life unless the
	// member is configured otherwise (--member-cert-ttl).
	DefaultMemberLifetime = 7 * 24 * time.Hour
	renewBefore           = 30 * 24 * time.Hour
)

// CA is the cluster CA. Key is nil on a member that only holds the
// certificate (a joined member signs with the key kept in etcd).
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     *ecdsa.PrivateKey
}

// Fingerprint is the hex sha256 of a certificate's DER bytes: the pin a
// join token carries.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Fingerprint of the CA certificate.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// NewCA creates a fresh CA.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"lpmos"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new CA: %w", err)
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), Key: key}, nil
}

// ParseCA reads a CA from PEM; keyPEM may be nil.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("pki: certificate is not a CA")
	}
	ca := &CA{Cert: cert, CertPEM: certPEM}
	if keyPEM != nil {
		if ca.Key, err = ParseKeyPEM(keyPEM); err != nil {
			return nil, err
		}
		if !ca.Key.PublicKey.Equal(cert.PublicKey) {
			return nil, errors.New("pki: CA key does not match the CA certificate")
		}
	}
	return ca, nil
}

// KeyPEM encodes the CA key (nil when the CA has none).
func (ca *CA) KeyPEM() ([]byte, error) {
	if ca.Key == nil {
		return nil, nil
	}
	return EncodeKeyPEM(ca.Key)
}

// ParseCertPEM parses the first certificate of a PEM block.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("pki: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate: %w", err)
	}
	return cert, nil
}

// ParseKeyPEM parses an EC private key (SEC 1 or PKCS#8).
func ParseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("pki: no PEM key")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("pki: key is not ECDSA")
	}
	return ek, nil
}

// EncodeKeyPEM encodes an EC key as SEC 1 PEM.
func EncodeKeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// NewKeyAndCSR makes a member key and a certificate request for name.
func NewKeyAndCSR(name string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	keyPEM, err = EncodeKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, pemBlock("CERTIFICATE REQUEST", der), nil
}

// ParseCSR parses and verifies a PEM certificate request.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: certificate request signature: %w", err)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, errors.New("pki: certificate request key must be ECDSA")
	}
	return csr, nil
}

// SignMember issues a member certificate for pub: CN is the member name,
// the SANs are hosts (IPs or DNS names) plus loopback; usable for serving
// and as a client certificate.
func (ca *CA) SignMember(name string, pub any, hosts []string) ([]byte, error) {
	return ca.SignMemberFor(name, pub, hosts, DefaultMemberLifetime)
}

// SignMemberFor is SignMember with the certificate's lifetime.
func (ca *CA) SignMemberFor(name string, pub any, hosts []string, lifetime time.Duration) ([]byte, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("pki: member certificate lifetime %s must be positive", lifetime)
	}
	if ca.Key == nil {
		return nil, errors.New("pki: this member holds no CA key")
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"lpmos"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	setSANs(tmpl, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign member certificate: %w", err)
	}
	return pemBlock("CERTIFICATE", der), nil
}

// setSANs puts hosts plus loopback into tmpl's subject alternative names:
// IP addresses as IP SANs, the rest as DNS names.
func setSANs(tmpl *x509.Certificate, hosts []string) {
	for _, h := range withLoopback(hosts) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}

func withLoopback(hosts []string) []string {
	out := []string{}
	for _, h := range append(append([]string{}, hosts...), "127.0.0.1", "::1", "localhost") {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// Covers reports whether cert is valid for every host for a while more:
// more than a third of its life (at most 30 days) is left.
func Covers(cert *x509.Certificate, hosts []string) bool {
	if time.Until(cert.NotAfter) < RenewWindow(cert) {
		return false
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// RenewWindow is how long before its expiry a certificate is renewed: a
// third of its life, at most 30 days.
func RenewWindow(cert *x509.Certificate) time.Duration {
	return min(renewBefore, cert.NotAfter.Sub(cert.NotBefore)/3)
}

// Dir is a member's PKI directory (<data-dir>/pki).
type Dir string

// Path of a file in the directory.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// LoadCA loads the CA certificate and, if present, its key.
func (d Dir) LoadCA() (*CA, error) {
	certPEM, err := os.ReadFile(d.Path(CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: read CA: %w", err)
	}
	keyPEM, err := os.ReadFile(d.Path(CAKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		keyPEM = nil
	} else if err != nil {
		return nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	return ParseCA(certPEM, keyPEM)
}

// Ensure makes the directory usable for member name on hosts: it creates
// the CA when there is none and createCA is true, and (re)issues the member
// certificate when it is missing, near expiry or lacks a host, if the CA
// key is here. It returns the CA.
func (d Dir) Ensure(name string, hosts []string, createCA bool) (*CA, error) {
	return d.EnsureFor(name, hosts, createCA, DefaultMemberLifetime)
}

// EnsureFor is Ensure issuing member certificates that live lifetime.
func (d Dir) EnsureFor(name string, hosts []string, createCA bool, lifetime time.Duration) (*CA, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", d, err)
	}
	ca, err := d.LoadCA()
	if errors.Is(err, os.ErrNotExist) && createCA {
		if ca, err = NewCA("lpmos cluster CA"); err != nil {
			return nil, err
		}
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		if err := WriteFile(d.Path(CAKeyFile), keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := WriteFile(d.Path(CACertFile), ca.CertPEM, 0o644); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("%w (a joined member gets its CA from `lpmos join`)", err)
	}
	if certPEM, err := os.ReadFile(d.Path(MemberCertFile)); err == nil {
		cert, perr := ParseCertPEM(certPEM)
		if perr == nil && Covers(cert, hosts) && cert.CheckSignatureFrom(ca.Cert) == nil {
			if _, kerr := os.Stat(d.Path(MemberKeyFile)); kerr == nil {
				return ca, nil
			}
		}
		if ca.Key == nil {
			if perr != nil {
				return nil, perr
			}
			// No key to re-issue with: keep the certificate we have.
			return ca, nil
		}
	} else if ca.Key == nil {
		return nil, fmt.Errorf("pki: no member certificate in %s and no CA key to issue one", d)
	}
	keyPEM, csrPEM, err := NewKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.SignMemberFor(name, csr.PublicKey, hosts, lifetime)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(d.Path(MemberKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFile(d.Path(MemberCertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// WriteFile writes atomically (temp file and rename) with mode.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("pki: create temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: chmod %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pki: rename to %s: %w", path, err)
	}
	return nil
}

// CertMatchesKey reports whether certPEM holds the public half of keyPEM.
func CertMatchesKey(certPEM, keyPEM []byte) bool {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return false
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return false
	}
	return key.PublicKey.Equal(cert.PublicKey)
}

// SameCert reports whether two PEM certificates are the same certificate.
func SameCert(a, b []byte) bool {
	ca, err1 := ParseCertPEM(a)
	cb, err2 := ParseCertPEM(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca.Raw, cb.Raw)
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return n, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
