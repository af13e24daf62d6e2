package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store"
)

// servingLifetime is how long a control plane certificate issued from the
// cluster CA lives; it is renewed at 2/3 of its life.
const servingLifetime = 90 * 24 * time.Hour

// signFunc issues a serving certificate for pub and returns it with the
// certificate of the CA that signed it.
type signFunc func(ctx context.Context, pub any, hosts []string, lifetime time.Duration) (certPEM, caPEM []byte, err error)

// servingCert is the control plane's HTTPS certificate: issued from the
// cluster CA, kept in <data-dir>/pki/serving.{crt,key}, reissued when it is
// missing, signed by another CA, lacks a host or reaches 2/3 of its life,
// and renewed in the background; GetCertificate always hands out the
// current one, so renewal needs no restart.
type servingCert struct {
	dir      pki.Dir
	hosts    []string
	lifetime time.Duration
	sign     signFunc
	log      *slog.Logger

	mu   sync.RWMutex
	cert *tls.Certificate
}

// tlsMode parses --tls: true for on (the default), false for off.
func tlsMode(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on", "true", "1", "yes", "":
		return true, nil
	case "off", "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("--tls %q: use on (HTTPS with a certificate from the cluster CA) or off (plain HTTP)", s)
}

// newServingCert prepares the control plane certificate of a serve process.
func newServingCert(ctx context.Context, st *store.Store, o serveOptions, log *slog.Logger) (*servingCert, error) {
	dir := pki.Dir(filepath.Join(o.dataDir, "pki"))
	c := &servingCert{dir: dir, hosts: servingHosts(o), lifetime: servingLifetime, log: log}
	if st.Embedded() {
		name := o.name
		c.sign = func(ctx context.Context, pub any, hosts []string, lifetime time.Duration) ([]byte, []byte, error) {
			return st.SignServing(ctx, name, pub, hosts, lifetime)
		}
	} else {
		// An external etcd has no cluster CA: a CA of this node, in the
		// same place, signs the control plane's certificate.
		ca, err := localCA(dir)
		if err != nil {
			return nil, err
		}
		c.sign = caSigner(ca, o.name)
	}
	if err := c.ensure(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// caSigner signs serving certificates with ca.
func caSigner(ca *pki.CA, name string) signFunc {
	return func(_ context.Context, pub any, hosts []string, lifetime time.Duration) ([]byte, []byte, error) {
		certPEM, err := ca.SignServing(name, pub, hosts, lifetime)
		return certPEM, ca.CertPEM, err
	}
}

// localCA loads the CA in dir, creating it when there is none.
func localCA(dir pki.Dir) (*pki.CA, error) {
	if err := os.MkdirAll(string(dir), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	ca, err := dir.LoadCA()
	if err == nil {
		if ca.Key == nil {
			return nil, fmt.Errorf("%s has no CA key to sign the control plane certificate: give --tls-cert/--tls-key", dir)
		}
		return ca, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if ca, err = pki.NewCA("lpmos CA"); err != nil {
		return nil, err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFile(dir.Path(pki.CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := pki.WriteFile(dir.Path(pki.CACertFile), ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// servingHosts are the names and addresses the certificate must cover:
// the host name, the member name, the advertise IP, the hosts of the
// listen address and etcd URLs (loopback is always added by pki).
func servingHosts(o serveOptions) []string {
	var hosts []string
	add := func(h string) {
		h = strings.Trim(h, "[]")
		if h == "" || h == "0.0.0.0" || h == "::" || slices.Contains(hosts, h) {
			return
		}
		hosts = append(hosts, h)
	}
	if hn, err := os.Hostname(); err == nil {
		add(hn)
	}
	add(o.name)
	if ip, err := advertiseIP(o.regional.advertiseIP); err == nil {
		add(ip.String())
	}
	if h, _, err := net.SplitHostPort(o.listenAddr); err == nil {
		add(h)
	}
	for _, u := range []string{o.etcdPeerURL, o.etcdClientURL} {
		if h, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")); err == nil {
			add(h)
		}
	}
	return hosts
}

// renewAt is when a certificate is due for renewal: at 2/3 of its life.
func renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// ensure loads the certificate on disk if it is still good, else issues one.
func (c *servingCert) ensure(ctx context.Context) error {
	if tc, err := c.load(); err == nil {
		c.set(tc)
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		c.log.Info("control plane certificate: issuing a new one", "reason", err.Error())
	}
	return c.issue(ctx)
}

// load reads the certificate on disk and checks it is usable.
func (c *servingCert) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(c.dir.Path(pki.ServingCertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(c.dir.Path(pki.ServingKeyFile))
	if err != nil {
		return nil, err
	}
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("serving certificate and key: %w", err)
	}
	caPEM, err := os.ReadFile(c.dir.Path(pki.CACertFile))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return nil, err
	}
	leaf := tc.Leaf
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("serving certificate not signed by %s: %w", c.dir.Path(pki.CACertFile), err)
	}
	if time.Now().After(renewAt(leaf)) {
		return nil, fmt.Errorf("serving certificate due for renewal since %s", renewAt(leaf).Format(time.RFC3339))
	}
	for _, h := range c.hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			return nil, fmt.Errorf("serving certificate does not cover %s", h)
		}
	}
	return &tc, nil
}

// issue makes a new key, has it signed and writes both (key 0600).
func (c *servingCert) issue(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("control plane certificate: generate key: %w", err)
	}
	certPEM, caPEM, err := c.sign(ctx, &key.PublicKey, c.hosts, c.lifetime)
	if err != nil {
		return fmt.Errorf("control plane certificate: sign with the cluster CA: %w (or give --tls-cert/--tls-key, or --tls=off)", err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("control plane certificate: %w", err)
	}
	if err := os.MkdirAll(string(c.dir), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", c.dir, err)
	}
	if _, err := os.Stat(c.dir.Path(pki.CACertFile)); errors.Is(err, os.ErrNotExist) {
		if err := pki.WriteFile(c.dir.Path(pki.CACertFile), caPEM, 0o644); err != nil {
			return err
		}
	}
	if err := pki.WriteFile(c.dir.Path(pki.ServingKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := pki.WriteFile(c.dir.Path(pki.ServingCertFile), certPEM, 0o644); err != nil {
		return err
	}
	c.set(&tc)
	c.log.Info("control plane certificate issued", "path", c.dir.Path(pki.ServingCertFile), "hosts", c.hosts,
		"not_after", tc.Leaf.NotAfter.Format(time.RFC3339), "renew_at", renewAt(tc.Leaf).Format(time.RFC3339))
	return nil
}

func (c *servingCert) set(tc *tls.Certificate) {
	c.mu.Lock()
	c.cert = tc
	c.mu.Unlock()
}

// current returns the certificate served now.
func (c *servingCert) current() *tls.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert
}

// GetCertificate is the tls.Config hook: the current certificate.
func (c *servingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current(), nil
}

// run renews the certificate at 2/3 of its life until ctx ends.
func (c *servingCert) run(ctx context.Context) {
	renewLoop(ctx, c.lifetime, func() time.Time { return renewAt(c.current().Leaf) }, c.issue,
		func(err error, retry time.Duration) {
			c.log.Warn("control plane certificate renewal failed; retrying", "error", err, "in", retry)
		})
}

// renewLoop waits until next() and calls renew, until ctx ends; a failed
// renewal is reported to failed and retried every minute (sooner for
// short lifetimes). The serving and agent API certificates renew this way.
func renewLoop(ctx context.Context, lifetime time.Duration, next func() time.Time, renew func(context.Context) error, failed func(err error, retry time.Duration)) {
	retry := min(time.Minute, lifetime/10)
	for {
		t := time.NewTimer(max(time.Until(next()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		for {
			err := renew(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			failed(err, retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

// controlPlaneURL is the https URL of a listen address, for the log.
func controlPlaneURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "https://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, port)
}
