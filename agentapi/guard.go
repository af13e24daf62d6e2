package agentapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/internal/netlimit"
	"github.com/lpmos/lpmos/store"
)

// Defaults of the abuse limits (Config.AgentRate, AgentBurst, MaxDiscovered).
const (
	DefaultAgentRate     = 2.0 // requests a second per source address
	DefaultAgentBurst    = 30
	DefaultMaxDiscovered = 10000
)

// Timeouts of the agent API's connections (see Region.serve). The approval
// long-poll, image and boot file downloads are exempt from the read and
// write timeouts: the connection caps bound them.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 2 * time.Minute
	IdleTimeout       = 90 * time.Second
)

// streaming selects the requests that outlive the read and write timeouts.
func streaming(req *http.Request) bool {
	p := req.URL.Path
	return strings.HasPrefix(p, wire.PathApproval) || strings.HasPrefix(p, wire.PathImages) ||
		(strings.HasPrefix(p, "/boot/") && !strings.HasSuffix(p, ".ipxe"))
}

// pathSession is the agent's bootstrap -> session token exchange.
const pathSession = "/api/v1/agent/session"

// guard holds the region's abuse limits and their counters.
type guard struct {
	rate          *netlimit.Rate
	badToken      *netlimit.Rate // charged for credentialed requests refused 401/403/404
	maxDiscovered int
	discoverSem   chan struct{} // serializes discovery writes (the cap's count)

	discoveryRefused atomic.Uint64
	hardwareRefused  atomic.Uint64
	logMu            sync.Mutex
	lastFullLog      time.Time
}

func newGuard(cfg Config) *guard {
	return &guard{
		rate:          netlimit.NewRate(cfg.AgentRate, cfg.AgentBurst, 0),
		badToken:      netlimit.NewRate(cfg.AgentRate, cfg.AgentBurst, 0),
		maxDiscovered: cfg.MaxDiscovered,
		discoverSem:   make(chan struct{}, 1),
	}
}

// LimitStats counts what the abuse limits refused, for /metrics.
type LimitStats struct {
	RateLimited      uint64 // 429s of unauthenticated agent endpoints
	RateEvicted      uint64 // source addresses the limiter forgot to stay bounded
	RateSources      int    // source addresses the limiter remembers
	DiscoveryRefused uint64 // new machines refused at MaxDiscovered
	HardwareRefused  uint64 // hardware reports refused by a limit (400/413)
}

// LimitStats returns the abuse limits' counters.
func (r *Region) LimitStats() LimitStats {
	g := r.guard
	return LimitStats{
		RateLimited: g.rate.Limited() + g.badToken.Limited(), RateEvicted: g.rate.Evicted() + g.badToken.Evicted(), RateSources: g.rate.Len(),
		DiscoveryRefused: g.discoveryRefused.Load(), HardwareRefused: g.hardwareRefused.Load(),
	}
}

// unauthenticated reports whether req is one of the agent endpoints anyone
// on the provisioning network may call without a credential.
func unauthenticated(req *http.Request) bool {
	p := req.URL.Path
	switch {
	case p == wire.PathHardware, strings.HasPrefix(p, wire.PathApproval):
		return httpapi.Bearer(req) == ""
	case p == pathSession:
		return true
	case strings.HasPrefix(p, "/boot/") && strings.HasSuffix(p, ".ipxe"):
		return true
	}
	return false
}

// credentialed reports whether req is an agent call with a token (hardware,
// approval, progress, failure): not rate-limited, unless its source keeps
// sending tokens that open nothing.
func credentialed(req *http.Request) bool {
	p := req.URL.Path
	return (p == wire.PathHardware || strings.HasPrefix(p, wire.PathApproval) || p == wire.PathProgress || p == wire.PathFailure) &&
		httpapi.Bearer(req) != ""
}

// rateLimit answers 429 with Retry-After to a source address that calls the
// unauthenticated endpoints faster than AgentRate (bursts of AgentBurst).
// A made-up token does not get around it: agent calls (hardware, approval,
// progress, failure) whose token is refused (401/403/404) are charged to a second bucket
// of the same size, and a source whose bucket is empty gets 429 there too.
func (r *Region) rateLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		src := netlimit.SourceKey(req.RemoteAddr)
		switch {
		case unauthenticated(req):
			if ok, retry := r.guard.rate.Allow(src); !ok {
				r.tooMany(w, req, src, retry)
				return
			}
		case credentialed(req):
			if ok, retry := r.guard.badToken.Peek(src); !ok {
				r.guard.badToken.Allow(src) // counts the refusal
				r.tooMany(w, req, src, retry)
				return
			}
			sw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, req)
			if sw.code == http.StatusUnauthorized || sw.code == http.StatusForbidden || sw.code == http.StatusNotFound {
				r.guard.badToken.Allow(src)
			}
			return
		}
		next.ServeHTTP(w, req)
	})
}

func (r *Region) tooMany(w http.ResponseWriter, req *http.Request, src string, retry time.Duration) {
	secs := max(int(math.Ceil(retry.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	r.log.Debug("agent API rate limited", "path", req.URL.Path, "remote", req.RemoteAddr)
	r.metrics.refused(req, http.StatusTooManyRequests) // route: unmatched (refused before routing)
	httpapi.WriteError(w, http.StatusTooManyRequests, "too many requests from "+src+": retry after "+strconv.Itoa(secs)+"s")
}

// statusWriter remembers the status of an answer. Unwrap keeps
// http.ResponseController working through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// countHardware counts a hardware report refused by a limit.
func (r *Region) countHardware(e *httpapi.Error) *httpapi.Error {
	if e != nil && (e.Code == http.StatusBadRequest || e.Code == http.StatusRequestEntityTooLarge) {
		r.guard.hardwareRefused.Add(1)
	}
	return e
}

// recordDiscovered stores a discovered machine within MaxDiscovered: a new
// MAC past the cap is refused (503, counted), a known one still updates.
func (r *Region) recordDiscovered(ctx context.Context, mac string, hw *wire.Hardware) *httpapi.Error {
	g := r.guard
	select {
	case g.discoverSem <- struct{}{}:
	case <-ctx.Done():
		return httpapi.StoreError(ctx.Err())
	}
	_, _, err := r.st.RecordMachineLimited(ctx, r.cfg.RegionID, mac, hw, g.maxDiscovered)
	<-g.discoverSem
	if errors.Is(err, store.ErrFull) {
		g.discoveryRefused.Add(1)
		g.logMu.Lock()
		if time.Since(g.lastFullLog) > time.Minute {
			g.lastFullLog = time.Now()
			r.log.Warn("discovered machines at their cap: new machines are refused", "max_discovered", g.maxDiscovered, "refused_total", g.discoveryRefused.Load())
		}
		g.logMu.Unlock()
		return httpapi.Errorf(http.StatusServiceUnavailable, "%v", err)
	}
	if err != nil {
		return httpapi.StoreError(err)
	}
	return nil
}
