// Package netlimit bounds what clients of lpmos's HTTP servers can cost:
// a per-source-address rate limiter (Rate) and a listener that caps
// concurrent connections in total and per source address and survives
// running out of file descriptors (Listener).
package netlimit

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys bounds the addresses a Rate remembers.
const DefaultMaxKeys = 16384

// Rate is a token bucket per source address: Burst requests at once, then
// Rate a second. The table of addresses is bounded (MaxKeys): past it the
// least recently seen address is forgotten (it starts again with a full
// bucket), so a flood from spoofed or many addresses costs bounded memory.
// A nil *Rate allows everything.
type Rate struct {
	rate    float64
	burst   float64
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	keys    map[string]*list.Element
	lru     *list.List // front: most recently seen
	limited atomic.Uint64
	evicted atomic.Uint64
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

// NewRate returns a limiter of rate requests a second with bursts of burst,
// remembering at most maxKeys addresses (DefaultMaxKeys when <= 0). rate
// <= 0 turns limiting off: it returns nil.
func NewRate(rate float64, burst, maxKeys int) *Rate {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Rate{rate: rate, burst: float64(burst), maxKeys: maxKeys, now: time.Now,
		keys: make(map[string]*list.Element), lru: list.New()}
}

// Allow takes a token for key. Without one it answers false and how long
// until the next token.
func (r *Rate) Allow(key string) (bool, time.Duration) {
	return r.take(key, true)
}

// Peek answers like Allow without taking the token (and without counting a
// refusal): callers that charge only for some outcomes Peek first and
// Allow once the outcome is known.
func (r *Rate) Peek(key string) (bool, time.Duration) {
	return r.take(key, false)
}

func (r *Rate) take(key string, take bool) (bool, time.Duration) {
	if r == nil {
		return true, 0
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var b *bucket
	if el, ok := r.keys[key]; ok {
		r.lru.MoveToFront(el)
		b = el.Value.(*bucket)
		b.tokens = math.Min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.rate)
		b.last = now
	} else {
		if r.lru.Len() >= r.maxKeys {
			old := r.lru.Back()
			r.lru.Remove(old)
			delete(r.keys, old.Value.(*bucket).key)
			r.evicted.Add(1)
		}
		b = &bucket{key: key, tokens: r.burst, last: now}
		r.keys[key] = r.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		if take {
			b.tokens--
		}
		return true, 0
	}
	if !take {
		return false, time.Duration((1 - b.tokens) / r.rate * float64(time.Second))
	}
	r.limited.Add(1)
	return false, time.Duration((1 - b.tokens) / r.rate * float64(time.Second))
}

// Len returns how many addresses the limiter remembers.
func (r *Rate) Len() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lru.Len()
}

// Limited returns how many requests were refused.
func (r *Rate) Limited() uint64 {
	if r == nil {
		return 0
	}
	return r.limited.Load()
}

// Evicted returns how many addresses were forgotten to stay within MaxKeys.
func (r *Rate) Evicted() uint64 {
	if r == nil {
		return 0
	}
	return r.evicted.Load()
}

// SourceKey returns the key of a remote address ("ip:port" or a bare IP):
// the IPv4 address, or the /64 of an IPv6 address (one host has a whole
// /64 to pick from). An unparsable address is its own key.
func SourceKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
