package agentapi

import (
	"context"
	"sync"
	"time"
)

// healthMaxAge is how long /healthz reuses the result of its last etcd
// probe.
const healthMaxAge = time.Second

// sharedProbe answers /healthz from one etcd probe shared by every caller:
// calls that come while a probe is in flight wait for it, and a result
// younger than maxAge is reused. /healthz needs no credentials and is not
// rate-limited (load balancers and monitors poll it), and each probe is a
// linearizable etcd read (a quorum round in a cluster): without sharing, a
// machine on the provisioning network could turn a flood of GETs into a
// flood of quorum reads, and 5,000 agents checking in at once were 5,000
// reads. With it a region makes about one probe per maxAge, whatever the
// load; an outage shows within maxAge plus the probe's own timeout.
type sharedProbe struct {
	check  func(context.Context) error
	maxAge time.Duration
	now    func() time.Time

	mu     sync.Mutex
	at     time.Time     // when the last probe ended (zero: none yet)
	err    error         // its result
	flight chan struct{} // closed when the probe in flight ends; nil: none
}

func newSharedProbe(check func(context.Context) error, maxAge time.Duration) *sharedProbe {
	return &sharedProbe{check: check, maxAge: maxAge, now: time.Now}
}

// result is the store's health as of at most maxAge ago. The caller that
// finds no fresh result and no probe in flight runs the probe for
// everyone, not bound to its own context (a caller that goes away does not
// fail the others' answer; the check has its own timeout); the others wait
// for it or for their own context.
func (p *sharedProbe) result(ctx context.Context) error {
	p.mu.Lock()
	if !p.at.IsZero() && p.now().Sub(p.at) < p.maxAge {
		err := p.err
		p.mu.Unlock()
		return err
	}
	if wait := p.flight; wait != nil {
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	}
	done := make(chan struct{})
	p.flight = done
	p.mu.Unlock()
	err := p.check(context.WithoutCancel(ctx))
	p.mu.Lock()
	p.err, p.at, p.flight = err, p.now(), nil
	p.mu.Unlock()
	close(done)
	return err
}
