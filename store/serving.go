package store

import (
	"context"
	"time"
)

// SignServing issues the control plane's HTTPS certificate for pub from
// the cluster CA (see pki.CA.SignServing) and returns it with the CA
// certificate. An external store has no cluster CA: ErrNotEmbedded.
func (s *Store) SignServing(ctx context.Context, name string, pub any, hosts []string, lifetime time.Duration) (certPEM, caPEM []byte, err error) {
	ca, err := s.signer(ctx)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = ca.SignServing(name, pub, hosts, lifetime)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, ca.CertPEM, nil
}
