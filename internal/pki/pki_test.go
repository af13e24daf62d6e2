package pki_test

import (
	"crypto/x509"
	"os"
	"testing"

	"github.com/lpmos/lpmos/internal/pki"
)

func TestEnsureCreatesAndReissues(t *testing.T) {
	d := pki.Dir(t.TempDir())
	if _, err := d.Ensure("m1", []string{"127.0.0.1"}, false); err == nil {
		t.Fatal("Ensure without a CA and createCA=false succeeded")
	}
	ca, err := d.Ensure("m1", []string{"127.0.0.1", "10.0.0.5"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{pki.CAKeyFile: 0o600, pki.MemberKeyFile: 0o600, pki.CACertFile: 0o644} {
		info, err := os.Stat(d.Path(name))
		if err != nil || info.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v", name, err, info)
		}
	}
	certPEM, _ := os.ReadFile(d.Path(pki.MemberCertFile))
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.0.0.5", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("member cert for %v: %v", usage, err)
		}
	}
	// Same hosts: kept. A new host: re-issued under the same CA.
	ca2, err := d.Ensure("m1", []string{"10.0.0.5"}, true)
	if err != nil || !pki.SameCert(ca2.CertPEM, ca.CertPEM) {
		t.Fatalf("second Ensure: %v", err)
	}
	again, _ := os.ReadFile(d.Path(pki.MemberCertFile))
	if string(again) != string(certPEM) {
		t.Fatal("member cert re-issued without need")
	}
	if _, err := d.Ensure("m1", []string{"10.0.0.6"}, true); err != nil {
		t.Fatal(err)
	}
	newPEM, _ := os.ReadFile(d.Path(pki.MemberCertFile))
	newCert, _ := pki.ParseCertPEM(newPEM)
	if newCert.VerifyHostname("10.0.0.6") != nil {
		t.Fatal("member cert not re-issued for a new host")
	}
	keyPEM, _ := os.ReadFile(d.Path(pki.MemberKeyFile))
	if !pki.CertMatchesKey(newPEM, keyPEM) {
		t.Fatal("member cert does not match its key")
	}
}

func TestCSRAndFingerprint(t *testing.T) {
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("m2")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignMember("m2", csr.PublicKey, []string{"node2.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !pki.CertMatchesKey(certPEM, keyPEM) {
		t.Fatal("signed cert does not hold the CSR key")
	}
	other, _ := pki.NewCA("test")
	if ca.Fingerprint() == other.Fingerprint() || len(ca.Fingerprint()) != 64 {
		t.Fatal("fingerprints")
	}
	if _, err := pki.ParseCSR(certPEM); err == nil {
		t.Fatal("a certificate parsed as a CSR")
	}
	noKey, err := pki.ParseCA(ca.CertPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noKey.SignMember("x", csr.PublicKey, nil); err == nil {
		t.Fatal("signed without a CA key")
	}
}
