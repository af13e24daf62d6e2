// Package retry holds the agent's one backoff policy: exponential, capped
// and jittered, so a rack of machines that lost their server together does
// not hammer it in lockstep when it comes back.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes the delay before retry number attempt (0-based).
type Backoff struct {
	Min time.Duration // first delay; default 500ms
	Max time.Duration // cap; default 30s
}

// Delay is min(Max, Min*2^attempt), jittered to between half and all of it
// ("equal jitter": never zero, so a retry loop cannot spin).
func (b Backoff) Delay(attempt int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	half := d / 2
	return half + rand.N(half+1)
}

// Sleep waits d or until ctx is done, whichever is first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
