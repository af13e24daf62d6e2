package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Short-lived member certificates and a revocation list.
//
// A member certificate lives Config.MemberCertTTL (default 7 days); the
// running member renews it at 2/3 of its life with the same key and CN
// (its etcd user) from the cluster CA, and writes it in place. etcd's
// embedded server reads the certificate files at every TLS handshake
// (transport.TLSInfo's GetCertificate/GetClientCertificate), so new peer
// and client connections present the new certificate without a restart;
// established connections are not re-checked by TLS and keep working.
//
// Every member certificate's serial is recorded under
// /cluster/member-certs/<CN>/<serial hex> (its expiry as value). Removing a
// member moves its serials to /cluster/revoked-certs/<serial hex>; every
// member watches that prefix and keeps <data-dir>/pki/crl.der, a CRL signed
// by the cluster CA listing the revoked serials that have not expired yet.
// etcd checks it (PeerTLSInfo/ClientTLSInfo.CRLFile) at every handshake of
// its peer and client listeners, so a removed member's certificate is
// refused at the TLS layer by every member, whatever member id it claims.
const (
	prefixMemberCerts  = "/cluster/member-certs/"
	prefixRevokedCerts = "/cluster/revoked-certs/"
	// CRLFile is the revocation list's file name in a member's PKI dir
	// (DER, as etcd reads it).
	CRLFile = "crl.der"
	// renewRetry is the wait after a failed renewal.
	renewRetry = time.Minute
)

// memberCertTTL is the configured member certificate lifetime.
func (s *Store) memberCertTTL() time.Duration {
	if s.cfg.MemberCertTTL > 0 {
		return s.cfg.MemberCertTTL
	}
	return pki.DefaultMemberLifetime
}

func serialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }

// registerCertOp records a member certificate's serial under its CN.
func registerCertOp(cert *x509.Certificate) clientv3.Op {
	return clientv3.OpPut(prefixMemberCerts+cert.Subject.CommonName+"/"+serialHex(cert.SerialNumber), cert.NotAfter.UTC().Format(time.RFC3339))
}

// registerCertPEM records the serial of a member certificate in PEM.
func registerCertPEM(ctx context.Context, cli *clientv3.Client, certPEM []byte) error {
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return err
	}
	if _, err := cli.Do(ctx, registerCertOp(cert)); err != nil {
		return fmt.Errorf("record member certificate %s: %w", serialHex(cert.SerialNumber), err)
	}
	return nil
}

// revokeCertsOf moves every recorded certificate of etcd user u to the
// revocation list (a removed member's users).
func revokeCertsOf(ctx context.Context, cli *clientv3.Client, u string) (int, error) {
	prefix := prefixMemberCerts + u + "/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read the certificates of %q: %w", u, err)
	}
	ops := []clientv3.Op{clientv3.OpDelete(prefix, clientv3.WithPrefix())}
	for _, kv := range resp.Kvs {
		ops = append(ops, clientv3.OpPut(prefixRevokedCerts+strings.TrimPrefix(string(kv.Key), prefix), string(kv.Value)))
	}
	for chunk := range slices.Chunk(ops, 100) { // etcd's default --max-txn-ops is 128
		if _, err := cli.Txn(ctx).Then(chunk...).Commit(); err != nil {
			return 0, fmt.Errorf("revoke the certificates of %q: %w", u, err)
		}
	}
	return len(resp.Kvs), nil
}

// ensureCRLFile writes an empty revocation list when the member has none
// (etcd refuses every handshake when its CRL file is missing).
func ensureCRLFile(dir pki.Dir, ca *pki.CA) error {
	if _, err := os.Stat(dir.Path(CRLFile)); err == nil {
		return nil
	}
	return writeCRL(dir.Path(CRLFile), ca, nil)
}

// writeCRL writes the revocation list of serials, signed by ca when it has
// its key (else by a throwaway issuer: etcd checks the serials, not the
// signature, and a joined member may not reach the CA key before etcd runs).
func writeCRL(path string, ca *pki.CA, serials map[string]time.Time) error {
	issuer, key := (*x509.Certificate)(nil), (*ecdsa.PrivateKey)(nil)
	if ca != nil && ca.Key != nil {
		issuer, key = ca.Cert, ca.Key
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("CRL issuer key: %w", err)
		}
		issuer = &x509.Certificate{Subject: pkix.Name{CommonName: "lpmos member CRL"}, KeyUsage: x509.KeyUsageCRLSign, SubjectKeyId: []byte("lpmos-crl")}
		key = k
	}
	now := time.Now()
	tmpl := &x509.RevocationList{Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}
	for hex, notAfter := range serials {
		n, ok := new(big.Int).SetString(hex, 16)
		if !ok {
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now})
		if notAfter.After(tmpl.NextUpdate) {
			tmpl.NextUpdate = notAfter
		}
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		return fmt.Errorf("create CRL: %w", err)
	}
	return pki.WriteFile(path, der, 0o644) // DER: etcd parses the file as it is
}

// refreshCRL rewrites crl.der from /cluster/revoked-certs/ (entries past
// their certificate's expiry are dropped, from etcd too). It returns the
// number of serials listed.
func (s *Store) refreshCRL(ctx context.Context) (int, error) {
	resp, err := s.cli.Get(ctx, prefixRevokedCerts, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read revoked certificates: %w", err)
	}
	serials := map[string]time.Time{}
	for _, kv := range resp.Kvs {
		hex := strings.TrimPrefix(string(kv.Key), prefixRevokedCerts)
		notAfter, err := time.Parse(time.RFC3339, string(kv.Value))
		if err == nil && time.Now().After(notAfter.Add(time.Hour)) {
			_, _ = s.cli.Delete(ctx, string(kv.Key)) // expired: TLS refuses it anyway
			continue
		}
		serials[hex] = notAfter
	}
	ca, err := s.signer(ctx)
	if err != nil {
		ca = nil // signed by a throwaway issuer; etcd checks serials only
	}
	if err := writeCRL(s.pkiDir.Path(CRLFile), ca, serials); err != nil {
		return 0, err
	}
	return len(serials), nil
}

// crlLoop keeps crl.der in step with /cluster/revoked-certs/ until ctx
// ends. Without quorum it retries with back-off (up to 30 s), warning once
// per outage.
func (s *Store) crlLoop(ctx context.Context) {
	last, fails := -1, 0
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, prefixRevokedCerts, clientv3.WithPrefix())
		for {
			n, err := s.refreshCRL(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				if fails == 0 {
					s.log.Warn("store: could not refresh the certificate revocation list; retrying", "error", err)
				}
				fails++
			case err == nil:
				fails = 0
				if n != last {
					s.log.Info("store: certificate revocation list updated", "revoked", n, "file", s.pkiDir.Path(CRLFile))
					last = n
				}
			}
			if err != nil {
				break
			}
			if _, ok := <-wch; !ok {
				break
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(min(30*time.Second, time.Second<<min(fails, 5))):
		}
	}
}

// memberCertRenewAt is when the running member renews cert: a third of
// the configured lifetime before its expiry, or now when it lives longer
// than configured (a certificate from before short lifetimes) or sits in
// its renewal window.
func memberCertRenewAt(cert *x509.Certificate, ttl time.Duration) time.Time {
	if cert.NotAfter.Sub(cert.NotBefore) > ttl+2*time.Hour {
		return time.Now()
	}
	return cert.NotAfter.Add(-min(ttl/3, 30*24*time.Hour))
}

// renewMemberCert re-issues this member's certificate from the cluster CA:
// same key, same CN (its etcd user), same names, a new lifetime. The new
// serial is recorded before the file is replaced.
func (s *Store) renewMemberCert(ctx context.Context) (*x509.Certificate, error) {
	ca, err := s.signer(ctx)
	if err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	certPEM, err := s.signRenewal(ca)
	if err != nil {
		return nil, err
	}
	if err := registerCertPEM(ctx, s.cli, certPEM); err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	if err := pki.WriteFile(s.tls.CertFile, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	return pki.ParseCertPEM(certPEM)
}

// signRenewal signs the renewal of this member's certificate with ca.
func (s *Store) signRenewal(ca *pki.CA) ([]byte, error) {
	old, err := readCert(s.tls.CertFile)
	if err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(s.tls.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	hosts := slices.Clone(old.DNSNames)
	for _, ip := range old.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	certPEM, err := ca.SignMemberFor(old.Subject.CommonName, &key.PublicKey, hosts, s.memberCertTTL())
	if err != nil {
		return nil, fmt.Errorf("renew member certificate: %w", err)
	}
	return certPEM, nil
}

// sealedCACacheFile keeps a copy of etcd's sealed CA record in the PKI
// dir, so a member that was down longer than its certificate's life can
// renew it before etcd starts (the others refuse an expired certificate,
// and without them its etcd cannot serve). It holds nothing the member's
// etcd data does not: the key stays sealed under cluster.key.
const sealedCACacheFile = "ca-sealed.json"

// cacheSealedCA refreshes the cached sealed CA record from etcd.
func (s *Store) cacheSealedCA(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, keyClusterCA)
	if err != nil {
		return fmt.Errorf("read cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var rec caRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec.KeySealed == "" {
		return nil // a plain record is never cached
	}
	return pki.WriteFile(s.pkiDir.Path(sealedCACacheFile), resp.Kvs[0].Value, 0o600)
}

// renewBeforeStart renews this member's certificate before etcd starts
// when it is due (expired after a long outage, or near it), with the local
// CA key or the cached sealed record. Without either it leaves the
// certificate as it is (the running member renews it, if it can connect).
func (s *Store) renewBeforeStart() {
	cert, err := readCert(s.tls.CertFile)
	if err != nil || time.Now().Before(memberCertRenewAt(cert, s.memberCertTTL())) {
		return
	}
	ca := s.ca.Load()
	if ca.Key == nil {
		data, err := os.ReadFile(s.pkiDir.Path(sealedCACacheFile))
		var rec caRecord
		if err == nil {
			err = json.Unmarshal(data, &rec)
		}
		if err == nil {
			ca, err = openCA(rec, s.clusterKey)
		}
		if err == nil && !pki.SameCert(ca.CertPEM, s.ca.Load().CertPEM) {
			err = errors.New("the cached CA is not this member's CA")
		}
		if err != nil {
			if time.Now().After(cert.NotAfter) {
				s.log.Warn("store: this member's certificate expired and it cannot renew it before starting; the other members will refuse it", "expired", cert.NotAfter, "error", err)
			}
			return
		}
	}
	certPEM, err := s.signRenewal(ca)
	if err == nil {
		err = pki.WriteFile(s.tls.CertFile, certPEM, 0o644)
	}
	if err != nil {
		s.log.Warn("store: could not renew this member's certificate before starting", "error", err)
		return
	}
	s.log.Info("store: member certificate renewed before start", "was_expiring", cert.NotAfter.UTC().Format(time.RFC3339))
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return pki.ParseCertPEM(data)
}

// renewLoop records this member's certificate and renews it before it
// expires, until ctx ends.
func (s *Store) renewLoop(ctx context.Context) {
	cert, err := readCert(s.tls.CertFile)
	if err != nil {
		s.log.Error("store: cannot read this member's certificate; it will not be renewed", "error", err)
		return
	}
	if _, err := s.cli.Do(ctx, registerCertOp(cert)); err != nil && ctx.Err() == nil {
		s.log.Warn("store: could not record this member's certificate serial (a removal could not revoke it)", "error", err)
	}
	if err := s.cacheSealedCA(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("store: could not cache the sealed CA record (renewal after a long outage needs it)", "error", err)
	}
	ttl := s.memberCertTTL()
	for {
		wait := time.Until(memberCertRenewAt(cert, ttl))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		next, err := s.renewMemberCert(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return
			}
			s.log.Warn("store: member certificate renewal failed; retrying", "error", err, "expires", cert.NotAfter, "retry_in", min(renewRetry, ttl/10))
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(renewRetry, max(ttl/10, 100*time.Millisecond))):
			}
			continue
		}
		_ = s.cacheSealedCA(ctx)
		s.pruneOwnCerts(ctx, next.Subject.CommonName)
		s.log.Info("store: member certificate renewed", "cn", next.Subject.CommonName, "serial", serialHex(next.SerialNumber),
			"expires", next.NotAfter.UTC().Format(time.RFC3339), "previous_serial", serialHex(cert.SerialNumber))
		cert = next
	}
}

// pruneOwnCerts forgets the recorded serials of this member's expired
// certificates (TLS refuses them anyway).
func (s *Store) pruneOwnCerts(ctx context.Context, cn string) {
	resp, err := s.cli.Get(ctx, prefixMemberCerts+cn+"/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	for _, kv := range resp.Kvs {
		if notAfter, err := time.Parse(time.RFC3339, string(kv.Value)); err == nil && time.Now().After(notAfter.Add(time.Hour)) {
			_, _ = s.cli.Delete(ctx, string(kv.Key))
		}
	}
}

// startMemberCerts runs the renewal and CRL loops of an embedded member;
// Close stops them.
func (s *Store) startMemberCerts() {
	ctx, cancel := context.WithCancel(context.Background())
	s.certsStop = cancel
	s.certsDone.Add(2)
	go func() { defer s.certsDone.Done(); s.renewLoop(ctx) }()
	go func() { defer s.certsDone.Done(); s.crlLoop(ctx) }()
}

// stopMemberCerts stops the loops startMemberCerts started and waits for
// them.
func (s *Store) stopMemberCerts() {
	if s.certsStop != nil {
		s.certsStop()
		s.certsDone.Wait()
	}
}
