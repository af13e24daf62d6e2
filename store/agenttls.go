package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
)

// IssueAgentAPICert issues a serving certificate for a region's agent API
// from the cluster CA: CN name, SANs hosts plus loopback. The returned
// chain is the certificate then the CA certificate (the agent finds the CA
// it pins in it); pin is the CA's hex sha256 (lpmos_ca=sha256:<pin>). It
// needs an embedded member (ErrNotEmbedded otherwise).
func (s *Store) IssueAgentAPICert(ctx context.Context, name string, hosts []string) (cert *tls.Certificate, pin string, err error) {
	return s.IssueAgentAPICertFor(ctx, name, hosts, 365*24*time.Hour)
}

// IssueAgentAPICertFor is IssueAgentAPICert with the certificate's
// lifetime (the region renews it while running: app/agentcert.go).
func (s *Store) IssueAgentAPICertFor(ctx context.Context, name string, hosts []string, lifetime time.Duration) (cert *tls.Certificate, pin string, err error) {
	ca, err := s.signer(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("agent API certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("agent API certificate: %w", err)
	}
	// Server authentication only: etcd takes a client certificate's CN as
	// its user, so a certificate that could also authenticate a client
	// would be an etcd identity (store/memberauth.go).
	certPEM, err := ca.SignServing("agent-api "+name, &key.PublicKey, hosts, lifetime)
	if err != nil {
		return nil, "", fmt.Errorf("agent API certificate: %w", err)
	}
	leaf, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, "", fmt.Errorf("agent API certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.Cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, ca.Fingerprint(), nil
}
