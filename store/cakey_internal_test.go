package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/internal/pki"
)

func cakeyFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func openCAKeyMember(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{
		DataDir: dir, Logger: slog.New(slog.DiscardHandler),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", cakeyFreePort(t)),
		PeerURL:   fmt.Sprintf("https://127.0.0.1:%d", cakeyFreePort(t)),
	})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func rawCARecord(t *testing.T, s *Store) ([]byte, caRecord) {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), keyClusterCA)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v", keyClusterCA, err)
	}
	var rec caRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	return resp.Kvs[0].Value, rec
}

// assertNoKeyMaterial fails when raw holds the CA private key in any form
// a reader of etcd could use: PEM, DER, base64 of the DER, or the scalar.
func assertNoKeyMaterial(t *testing.T, raw []byte, ca *pki.CA) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := ca.KeyPEM()
	for name, needle := range map[string][]byte{
		"PEM header": []byte("PRIVATE KEY"),
		"key PEM":    keyPEM,
		"DER":        der,
		"base64 DER": []byte(base64.StdEncoding.EncodeToString(der)),
		"scalar":     ca.Key.D.Bytes(),
	} {
		if bytes.Contains(raw, needle) {
			t.Fatalf("/cluster/ca in etcd holds the CA key (%s): %s", name, raw)
		}
	}
}

// The CA key is sealed in etcd; a member without the key on disk (a joined
// one) opens it with its cluster key and signs joiners; without the right
// cluster key it cannot; the joiner receives the cluster key sealed to its
// own CSR key.
func TestCAKeySealedInEtcd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openCAKeyMember(t, dir)
	defer s.Close()

	raw, rec := rawCARecord(t, s)
	assertNoKeyMaterial(t, raw, s.ca.Load())
	if rec.Key != "" || rec.KeySealed == "" || !pki.SameCert([]byte(rec.Cert), s.ca.Load().CertPEM) {
		t.Fatalf("record: %+v", rec)
	}
	fi, err := os.Stat(filepath.Join(dir, "pki", ClusterKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster key file: %v %v", err, fi)
	}

	// Act as a joined member: the CA certificate only.
	full := s.ca.Load()
	s.ca.Store(&pki.CA{Cert: full.Cert, CertPEM: full.CertPEM})
	defer s.ca.Store(full)
	ca, err := s.signer(ctx)
	if err != nil || !ca.Key.Equal(full.Key) {
		t.Fatalf("signer from the sealed record: %v", err)
	}

	tok, err := s.CreateJoinToken(ctx, 600e9, false)
	if err != nil {
		t.Fatal(err)
	}
	_, id, secret, err := ParseJoinToken(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("m2")
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pki.ParseCSR(csrPEM)
	resp, err := s.AdmitMember(ctx, JoinRequest{
		TokenID: id, Proof: JoinProof(secret, csr.Raw), CSR: string(csrPEM), Name: "m2",
		PeerURL:   fmt.Sprintf("https://127.0.0.1:%d", cakeyFreePort(t)),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", cakeyFreePort(t)),
	})
	if err != nil {
		t.Fatalf("admit through a member without the CA key on disk: %v", err)
	}
	cert, err := pki.ParseCertPEM([]byte(resp.Cert))
	if err != nil || cert.CheckSignatureFrom(full.Cert) != nil {
		t.Fatalf("issued cert: %v", err)
	}
	if strings.Contains(resp.ClusterKey, fmt.Sprintf("%x", s.clusterKey)) {
		t.Fatal("the join answer carries the cluster key in the clear")
	}
	joiner := t.TempDir()
	if ok, err := InstallClusterKey(joiner, resp, keyPEM); !ok || err != nil {
		t.Fatalf("install the cluster key: %v %v", ok, err)
	}
	got, err := loadClusterKey(pki.Dir(filepath.Join(joiner, "pki")))
	if err != nil || !bytes.Equal(got, s.clusterKey) {
		t.Fatalf("installed cluster key differs: %v", err)
	}
	otherKey, _, _ := pki.NewKeyAndCSR("thief")
	if _, err := InstallClusterKey(t.TempDir(), resp, otherKey); err == nil {
		t.Fatal("another key opened the cluster key sealed to the joiner's CSR")
	}

	// Without the right cluster key the sealed record does not open.
	good := s.clusterKey
	defer func() { s.clusterKey = good }()
	wrong := make([]byte, clusterKeyLen)
	_, _ = rand.Read(wrong)
	tampered := rec
	b, _ := base64.StdEncoding.DecodeString(rec.KeySealed)
	b[len(b)-1] ^= 1
	tampered.KeySealed = base64.StdEncoding.EncodeToString(b)
	for _, c := range []struct {
		name string
		rec  caRecord
		key  []byte
		want string
	}{
		{"no cluster key", rec, nil, ClusterKeyFile},
		{"another cluster key", rec, wrong, "another cluster key"},
		{"tampered", tampered, good, "open sealed CA key"},
	} {
		if _, err := openCA(c.rec, c.key); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	s.clusterKey = nil
	if _, err := s.signer(ctx); err == nil || !strings.Contains(err.Error(), ClusterKeyFile) {
		t.Fatalf("signer without a cluster key: %v", err)
	}
}

// A plain CA key left in etcd by an older lpmos is sealed when the member
// restarts.
func TestCAKeyPlainRecordMigrated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openCAKeyMember(t, dir)
	keyPEM, _ := s.ca.Load().KeyPEM()
	if _, err := s.cli.Put(ctx, keyClusterCA, mustJSON(caRecord{Cert: string(s.ca.Load().CertPEM), Key: string(keyPEM)})); err != nil {
		t.Fatal(err)
	}
	if raw, _ := rawCARecord(t, s); !bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatal("setup: the plain record was not written")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Also a cluster from before the cluster key existed.
	if err := os.Remove(filepath.Join(dir, "pki", ClusterKeyFile)); err != nil {
		t.Fatal(err)
	}
	s = openCAKeyMember(t, dir)
	defer s.Close()
	raw, rec := rawCARecord(t, s)
	assertNoKeyMaterial(t, raw, s.ca.Load())
	if rec.Key != "" || rec.KeySealed == "" {
		t.Fatalf("after restart: %+v", rec)
	}
	ca, err := openCA(rec, s.clusterKey)
	if err != nil || !ca.Key.Equal(s.ca.Load().Key) {
		t.Fatalf("open the migrated record: %v", err)
	}
}
