package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lpmos/lpmos/internal/pki"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The CA private key is kept in etcd sealed (AES-256-GCM) under the
// cluster key: 32 random bytes created with the cluster, kept in each
// member's <data-dir>/pki/cluster.key (0600) and handed to a joiner inside
// its admission answer, sealed to the public key of the joiner's CSR
// (ECDH P-256), so only the holder of that CSR's private key opens it. A
// stolen etcd snapshot, or a client that can only read etcd, gets the
// sealed bytes and no key.

// ClusterKeyFile is the cluster key's file name in a member's PKI dir.
const ClusterKeyFile = "cluster.key"

const clusterKeyLen = 32

// loadClusterKey reads dir/cluster.key (nil, nil when absent).
func loadClusterKey(dir pki.Dir) ([]byte, error) {
	data, err := os.ReadFile(dir.Path(ClusterKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster key: %w", err)
	}
	key, err := hex.DecodeString(string(trimSpace(data)))
	if err != nil || len(key) != clusterKeyLen {
		return nil, fmt.Errorf("cluster key %s: want %d hex-encoded bytes", dir.Path(ClusterKeyFile), clusterKeyLen)
	}
	return key, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// writeClusterKey stores key in dir/cluster.key, mode 0600.
func writeClusterKey(dir pki.Dir, key []byte) error {
	if err := os.MkdirAll(string(dir), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return pki.WriteFile(dir.Path(ClusterKeyFile), []byte(hex.EncodeToString(key)+"\n"), 0o600)
}

// ensureClusterKey loads this member's cluster key; the member that holds
// the CA key creates one when it has none (a new cluster, or one from
// before the key was sealed).
func (s *Store) ensureClusterKey() error {
	key, err := loadClusterKey(s.pkiDir)
	if err != nil {
		return err
	}
	if key == nil && s.ca.Load().Key != nil {
		key = make([]byte, clusterKeyLen)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("cluster key: %w", err)
		}
		if err := writeClusterKey(s.pkiDir, key); err != nil {
			return err
		}
		s.log.Info("store: created the cluster key that seals the CA key in etcd", "path", s.pkiDir.Path(ClusterKeyFile))
	}
	s.clusterKey = key
	return nil
}

// keyID names a cluster key without revealing it.
func keyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("lpmos cluster key id\x00"), key...))
	return hex.EncodeToString(sum[:8])
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(block)
}

// sealCAKey encrypts the CA key PEM under the cluster key; the CA
// certificate is bound as associated data.
func sealCAKey(clusterKey []byte, ca *pki.CA) (caRecord, error) {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return caRecord{}, err
	}
	aead, err := gcm(clusterKey)
	if err != nil {
		return caRecord{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return caRecord{}, fmt.Errorf("nonce: %w", err)
	}
	ct := aead.Seal(nonce, nonce, keyPEM, ca.Cert.Raw)
	return caRecord{Cert: string(ca.CertPEM), KeySealed: base64.StdEncoding.EncodeToString(ct), KeyID: keyID(clusterKey)}, nil
}

// openCA returns the CA of a record with its key: sealed records need the
// cluster key; a plain record (from before sealing) is read as it is.
func openCA(rec caRecord, clusterKey []byte) (*pki.CA, error) {
	if rec.KeySealed == "" {
		if rec.Key == "" {
			return nil, errors.New("the cluster CA record in etcd has no key")
		}
		return pki.ParseCA([]byte(rec.Cert), []byte(rec.Key))
	}
	if clusterKey == nil {
		return nil, errors.New("this member has no cluster key (" + ClusterKeyFile + ") to open the sealed CA key: it joined before the CA key was sealed; copy <data-dir>/pki/" + ClusterKeyFile + " (mode 0600) from another member, or join new members through one that has it")
	}
	if rec.KeyID != keyID(clusterKey) {
		return nil, fmt.Errorf("the CA key in etcd is sealed under another cluster key (id %s, this member's is %s): copy <data-dir>/pki/%s from the first member", rec.KeyID, keyID(clusterKey), ClusterKeyFile)
	}
	cert, err := pki.ParseCertPEM([]byte(rec.Cert))
	if err != nil {
		return nil, err
	}
	ct, err := base64.StdEncoding.DecodeString(rec.KeySealed)
	if err != nil {
		return nil, fmt.Errorf("decode sealed CA key: %w", err)
	}
	aead, err := gcm(clusterKey)
	if err != nil {
		return nil, err
	}
	if len(ct) < aead.NonceSize() {
		return nil, errors.New("sealed CA key too short")
	}
	keyPEM, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], cert.Raw)
	if err != nil {
		return nil, fmt.Errorf("open sealed CA key: %w", err)
	}
	return pki.ParseCA([]byte(rec.Cert), keyPEM)
}

// migrateCARecord rewrites a plain /cluster/ca (a cluster from before the
// key was sealed) sealed under this member's cluster key. Only the same CA
// is rewritten, and only if the record did not change meanwhile.
func (s *Store) migrateCARecord(ctx context.Context) error {
	if s.clusterKey == nil {
		return nil
	}
	resp, err := s.cli.Get(ctx, keyClusterCA)
	if err != nil {
		return fmt.Errorf("read cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var rec caRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return fmt.Errorf("decode cluster CA: %w", err)
	}
	if rec.Key == "" || !pki.SameCert([]byte(rec.Cert), s.ca.Load().CertPEM) {
		return nil
	}
	ca, err := openCA(rec, nil)
	if err != nil {
		return err
	}
	sealed, err := sealCAKey(s.clusterKey, ca)
	if err != nil {
		return err
	}
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(keyClusterCA), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(keyClusterCA, mustJSON(sealed))).Commit()
	if err != nil {
		return fmt.Errorf("seal the CA key in etcd: %w", err)
	}
	if tr.Succeeded {
		s.log.Info("store: the CA key in etcd was in the clear; it is now sealed under the cluster key")
	}
	return nil
}

// sealForCSR encrypts data to the holder of the private key of pub (an
// ECDSA P-256 key from a join CSR): ephemeral ECDH, AES-256-GCM.
func sealForCSR(pub any, data []byte) (string, error) {
	epub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return "", errors.New("the CSR key is not ECDSA")
	}
	peer, err := epub.ECDH()
	if err != nil {
		return "", fmt.Errorf("CSR key: %w", err)
	}
	eph, err := peer.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("ephemeral key: %w", err)
	}
	shared, err := eph.ECDH(peer)
	if err != nil {
		return "", fmt.Errorf("ecdh: %w", err)
	}
	ephBytes := eph.PublicKey().Bytes()
	aead, err := gcm(joinSealKey(shared, ephBytes))
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	out := append(append([]byte{byte(len(ephBytes))}, ephBytes...), aead.Seal(nonce, nonce, data, ephBytes)...)
	return base64.StdEncoding.EncodeToString(out), nil
}

func joinSealKey(shared, ephPub []byte) []byte {
	h := sha256.New()
	h.Write([]byte("lpmos join cluster key\x00"))
	h.Write(shared)
	h.Write(ephPub)
	return h.Sum(nil)
}

// openForKey opens what sealForCSR sealed, with the CSR's private key.
func openForKey(keyPEM []byte, sealed string) ([]byte, error) {
	k, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	priv, err := k.ECDH()
	if err != nil {
		return nil, fmt.Errorf("member key: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < 1 || len(raw) < 1+int(raw[0]) {
		return nil, errors.New("malformed sealed cluster key")
	}
	ephBytes, ct := raw[1:1+int(raw[0])], raw[1+int(raw[0]):]
	eph, err := ecdh.P256().NewPublicKey(ephBytes)
	if err != nil {
		return nil, fmt.Errorf("sealed cluster key: %w", err)
	}
	shared, err := priv.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("ecdh: %w", err)
	}
	aead, err := gcm(joinSealKey(shared, ephBytes))
	if err != nil {
		return nil, err
	}
	if len(ct) < aead.NonceSize() {
		return nil, errors.New("sealed cluster key too short")
	}
	out, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], ephBytes)
	if err != nil {
		return nil, fmt.Errorf("open sealed cluster key (not sealed to this member's key): %w", err)
	}
	return out, nil
}

// InstallClusterKey opens the cluster key of a join answer with the
// joiner's member key and stores it in <dataDir>/pki/cluster.key (0600).
// An answer without one (an admitting member from before sealing) installs
// nothing and says so.
func InstallClusterKey(dataDir string, resp JoinResponse, memberKeyPEM []byte) (bool, error) {
	if resp.ClusterKey == "" {
		return false, nil
	}
	key, err := openForKey(memberKeyPEM, resp.ClusterKey)
	if err != nil {
		return false, err
	}
	if len(key) != clusterKeyLen {
		return false, errors.New("the cluster key in the join answer has the wrong length")
	}
	return true, writeClusterKey(pki.Dir(filepath.Join(dataDir, "pki")), key)
}
