package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// peerURLOf is the peer URL of member name in st.
func peerURLOf(st store.ClusterStatus, name string) string {
	for _, m := range st.Members {
		if m.Name == name && len(m.PeerURLs) > 0 {
			return m.PeerURLs[0]
		}
	}
	return ""
}

// certHandshake connects to rawURL with n's member certificate and
// returns nil when the server accepted it: TLS 1.3 servers check the
// client certificate (and etcd its CRL) after the client's side of the
// handshake, so a refusal shows on the first read.
func certHandshake(t *testing.T, n *clusterNode, rawURL string) error {
	t.Helper()
	dir := filepath.Join(n.dataDir, "pki")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "member.crt"), filepath.Join(dir, "member.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: u.Hostname()})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}

// waitCertRefused waits until rawURL refuses n's member certificate.
func waitCertRefused(t *testing.T, n *clusterNode, rawURL string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for certHandshake(t, n, rawURL) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts the certificate of removed member %s after %s", rawURL, n.name, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// credentialRefused: etcd refused a call made with a removed member's
// certificate, by auth (its user is gone) or at the TLS handshake (its
// certificate is revoked: the client then retries until its deadline).
func credentialRefused(err error) bool {
	if err == nil {
		return false
	}
	for _, s := range []string{"user name not found", "permission denied", "bad certificate", "revoked", "EOF", "connection reset", "connection closed", "deadline exceeded"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// etcdGetCA reads the (sealed) CA record.
func etcdGetCA(c *clientv3.Client) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Get(ctx, "/cluster/ca")
}
