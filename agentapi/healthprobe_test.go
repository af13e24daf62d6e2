package agentapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for sharedProbe.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestSharedProbeOneProbeForConcurrentCalls: callers that come while a
// probe is in flight get its result and run no probe of their own.
func TestSharedProbeOneProbeForConcurrentCalls(t *testing.T) {
	down := errors.New("etcd down")
	var calls atomic.Int32
	gate := make(chan struct{})
	p := newSharedProbe(func(context.Context) error {
		calls.Add(1)
		<-gate
		return down
	}, time.Hour)
	const n = 32
	errs := make(chan error, n)
	for range n {
		go func() { errs <- p.result(context.Background()) }()
	}
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	for range n {
		if err := <-errs; err != down {
			t.Fatalf("a caller got %v, want the probe's %v", err, down)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Fatalf("%d probes for %d concurrent calls, want 1", c, n)
	}
}

// TestSharedProbeMaxAge: a result is reused while younger than maxAge, a
// new probe runs after; a failure and the recovery after it are each seen
// by the next probe.
func TestSharedProbeMaxAge(t *testing.T) {
	down := errors.New("no quorum")
	results := []error{nil, down, nil}
	var calls int
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	p := newSharedProbe(func(context.Context) error {
		calls++
		return results[calls-1]
	}, time.Second)
	p.now = clock.now
	for _, s := range []struct {
		name      string
		advance   time.Duration
		want      error
		wantCalls int
	}{
		{"first call probes", 0, nil, 1},
		{"reused just before maxAge", time.Second - time.Nanosecond, nil, 1},
		{"probed again at maxAge: down", time.Nanosecond, down, 2},
		{"the failure is reused", 500 * time.Millisecond, down, 2},
		{"recovery seen by the next probe", 500 * time.Millisecond, nil, 3},
	} {
		clock.add(s.advance)
		if err := p.result(context.Background()); err != s.want || calls != s.wantCalls {
			t.Fatalf("%s: got %v after %d probes, want %v after %d", s.name, err, calls, s.want, s.wantCalls)
		}
	}
}

// TestSharedProbeCallerContexts: a waiting caller whose context ends
// returns at once while the probe goes on for the others, and the caller
// running the probe does not hand its own cancellation to the check.
func TestSharedProbeCallerContexts(t *testing.T) {
	gate := make(chan struct{})
	checkCtxErr := make(chan error, 1)
	p := newSharedProbe(func(ctx context.Context) error {
		<-gate
		checkCtxErr <- ctx.Err()
		return nil
	}, time.Hour)
	proberCtx, cancelProber := context.WithCancel(context.Background())
	prober := make(chan error, 1)
	go func() { prober <- p.result(proberCtx) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		inFlight := p.flight != nil
		p.mu.Unlock()
		if inFlight {
			break
		}
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("no probe in flight 5 s after the first call")
		}
	}
	waiterCtx, cancelWaiter := context.WithCancel(context.Background())
	cancelWaiter()
	waiter := make(chan error, 1)
	go func() { waiter <- p.result(waiterCtx) }()
	select {
	case err := <-waiter:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("waiter with an ended context: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("a waiter with an ended context still waits for the probe after 5 s")
	}
	cancelProber()
	close(gate)
	if err := <-prober; err != nil {
		t.Fatalf("prober: %v", err)
	}
	if err := <-checkCtxErr; err != nil {
		t.Fatalf("the check saw its caller's cancellation: %v", err)
	}
	if err := p.result(context.Background()); err != nil {
		t.Fatalf("the result after: %v", err)
	}
}

// TestHealthzSharesOneEtcdProbe: 64 concurrent GET /healthz on a region
// with a real store all answer ok, with at most 2 etcd probes (one, or
// two if the first ended while the last requests were still on their way).
func TestHealthzSharesOneEtcdProbe(t *testing.T) {
	st := newStore(t)
	r := newRegion(t, st, "dc1", nil)
	var probes atomic.Int32
	real := r.health.check
	r.health.check = func(ctx context.Context) error {
		probes.Add(1)
		return real(ctx)
	}
	const n = 64
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			codes <- call(t, http.MethodGet, r.srv.URL+"/healthz", "", nil, nil)
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("GET /healthz: %d, want 200", c)
		}
	}
	if p := probes.Load(); p < 1 || p > 2 {
		t.Fatalf("%d etcd probes for %d concurrent GET /healthz, want 1 or 2", p, n)
	}
}
