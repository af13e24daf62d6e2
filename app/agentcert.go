package app

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"
)

// agentCertLifetime is the agent API certificate's life; the region
// renews it at 2/3 of it while running.
const agentCertLifetime = 30 * 24 * time.Hour

// agentCert is the agent API's certificate: issued from the cluster CA on
// start, renewed in the background before it expires; GetCertificate hands
// out the current one at each TLS handshake, so renewal needs no restart
// (agents pin the CA, not the certificate).
type agentCert struct {
	lifetime time.Duration
	issue    func(ctx context.Context) (*tls.Certificate, error)
	log      *slog.Logger

	mu   sync.RWMutex
	cert *tls.Certificate
}

func newAgentCert(first *tls.Certificate, lifetime time.Duration, issue func(context.Context) (*tls.Certificate, error), log *slog.Logger) *agentCert {
	return &agentCert{lifetime: lifetime, issue: issue, log: log, cert: first}
}

func (c *agentCert) current() *tls.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert
}

// GetCertificate is the tls.Config hook: the current certificate.
func (c *agentCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current(), nil
}

// run renews the certificate a third of its lifetime before it expires,
// until ctx ends (renewLoop, app/servecert.go).
func (c *agentCert) run(ctx context.Context) {
	renewLoop(ctx, c.lifetime, func() time.Time { return c.current().Leaf.NotAfter.Add(-c.lifetime / 3) }, c.renew,
		func(err error, retry time.Duration) {
			c.log.Warn("agent API certificate renewal failed; retrying", "error", err, "in", retry, "expires", c.current().Leaf.NotAfter)
		})
}

// renew issues the next certificate and serves it from now on.
func (c *agentCert) renew(ctx context.Context) error {
	next, err := c.issue(ctx)
	if err != nil {
		return err
	}
	old := c.current()
	c.mu.Lock()
	c.cert = next
	c.mu.Unlock()
	c.log.Info("agent API certificate renewed", "expires", next.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"serial", next.Leaf.SerialNumber.Text(16), "previous_serial", old.Leaf.SerialNumber.Text(16))
	return nil
}
