package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store/storetest"
)

// The certificates lpmos serves HTTPS with (the agent API's and the
// control plane's) authenticate servers only: etcd takes a client
// certificate's CN as its user, so a serving certificate that could also
// authenticate a client would be an etcd identity.
func TestServingCertificatesAreServerOnly(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := context.Background()
	agent, _, err := st.IssueAgentAPICert(ctx, "dc1", []string{"10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	servingPEM, _, err := st.SignServing(ctx, "m1", &key.PublicKey, []string{"10.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := pki.ParseCertPEM(servingPEM)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*x509.Certificate{"agent API": agent.Leaf, "control plane": serving} {
		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
			t.Errorf("%s certificate (CN %q) has extended key usages %v, want server auth only", name, c.Subject.CommonName, c.ExtKeyUsage)
		}
	}
}
