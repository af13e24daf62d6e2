package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// errKeepAlivesHalted is returned to a lease keepalive asked for while this
// member is leaving its cluster or stopping.
var errKeepAlivesHalted = errors.New("lease keepalives halted: this member is leaving its cluster or stopping")

// keepAlives owns the lessor that carries this process's long-lived lease
// keepalive streams (the region registrations), apart from the client's own
// lessor, so they can be stopped alone before this member stops.
//
// Why: etcd v3.7.3 panics (nil bbolt transaction in checkLeaseRenew) when a
// keepalive renewal is in flight on a follower while the member stops: the
// follower forwards renewals to the leader and retries every 50 ms until the
// request's deadline, across its own backend being closed. A member that is
// removed (`lpmos leave`, `lpmos member remove`) stops at once, and the
// renewal of this process's own region lease was the one in flight (CI, run
// 5 of session 5: the process died before answering the DELETE). Closing
// the lessor cancels the streams; etcd's renewal loop checks the stream's
// context before each retry and returns.
type keepAlives struct {
	mu     sync.Mutex
	lessor clientv3.Lease // nil until the first keepalive, or after halt
	halted bool
}

// keepAlive keeps lease id alive through the halt-able lessor.
func (s *Store) keepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	s.ka.mu.Lock()
	if s.ka.halted {
		s.ka.mu.Unlock()
		return nil, errKeepAlivesHalted
	}
	if s.ka.lessor == nil {
		if s.leases != nil { // the in-process client has no connection to build one on
			s.ka.lessor = clientv3.NewLeaseFromLeaseClient(s.leases, s.cli, time.Second)
		} else {
			s.ka.lessor = clientv3.NewLease(s.cli)
		}
	}
	l := s.ka.lessor
	s.ka.mu.Unlock()
	ch, err := l.KeepAlive(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("keep lease %x alive: %w", int64(id), err)
	}
	return ch, nil
}

// haltKeepAlives closes every keepalive stream of keepAlive and refuses new
// ones until resumeKeepAlives. It reports whether streams were open.
func (s *Store) haltKeepAlives() bool {
	s.ka.mu.Lock()
	defer s.ka.mu.Unlock()
	s.ka.halted = true
	if s.ka.lessor == nil {
		return false
	}
	_ = s.ka.lessor.Close()
	s.ka.lessor = nil
	return true
}

// keepAlivesHalted reports whether keepalives are halted.
func (s *Store) keepAlivesHalted() bool {
	s.ka.mu.Lock()
	defer s.ka.mu.Unlock()
	return s.ka.halted
}

// resumeKeepAlives lets keepalives start again (a removal that failed):
// the region registrations register again on their own.
func (s *Store) resumeKeepAlives() {
	s.ka.mu.Lock()
	s.ka.halted = false
	s.ka.mu.Unlock()
}

// keepAliveDrain is how long a removal of this member waits after closing
// its keepalive streams, so that a renewal etcd is still forwarding sees its
// stream cancelled (its retry period is 50 ms) before the member stops.
const keepAliveDrain = 250 * time.Millisecond

// haltKeepAlivesOnStop halts the keepalives as soon as the embedded member
// starts stopping for any reason (removed by another member, fatal error),
// which narrows the window of the etcd panic above to the stop's own
// duration.
func (s *Store) haltKeepAlivesOnStop(stopping <-chan struct{}) {
	go func() {
		<-stopping
		s.haltKeepAlives()
	}()
}
