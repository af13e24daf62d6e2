// Package agentapi is the regional side of lpmos: it registers its region in
// the store, claims the pending tasks of that region (and only those), mints
// agent credentials (boot tokens, sessions), turns silent installs into stalled ones, and serves
// the agent-facing HTTP API plus the iPXE boot path.
//
// One Region serves one region ID; several regions share one cluster and
// each touches only its own tasks.
//
// Authentication of the agent API (the tokens are described in
// store/sessions.go; only their hashes are stored):
//
//   - Every rendering of a task's iPXE script mints a fresh boot token
//     (lpmos_token, single use, BootTokenTTL), replacing the previous one.
//     The agent's first call, POST /api/v1/agent/session, exchanges it for
//     the task's session token; a new exchange revokes the previous
//     session, and the task's events name the address that redeemed it. A
//     second exchange of the same boot token is 401 with an event naming
//     the address that tried.
//   - Hardware, approval, progress, failure and image calls about a task
//     carry "Authorization: Bearer <session token>". A missing, revoked or
//     unknown token is 401 with a JSON error saying what happened; a
//     session of another task (or MAC) is 403.
//   - A machine without a task reports its hardware without a token and is
//     given a discovery session bound to its MAC (a newer report replaces
//     it); it long-polls approval with it. When a task is created for the
//     MAC, the poll answer hands the agent the task and a session for it.
//     A live agent whose task ended keeps polling with its session; a retry
//     (or a new task for its MAC) is handed over the same way, with a fresh
//     session.
//   - user_data and the rest of the install spec go out only in the
//     approval answer of an approved/installing/stalled task. Images need
//     the session of such a task whose os/version is the one requested.
//   - Progress follows the stage order and ranges (store.ReportAgentProgress);
//     seq may not exceed the server clock (unix microseconds) plus MaxSeqSkew.
package agentapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/pxe"
	"github.com/lpmos/lpmos/store"
)

// Defaults of Config.
const (
	DefaultStallAfter   = 2 * time.Minute
	DefaultKernelName   = "vmlinuz"
	DefaultInitrdName   = "initramfs.img"
	DefaultLeaseTTL     = 10 // seconds
	DefaultPollInterval = 250 * time.Millisecond
	DefaultMaxWait      = 60 * time.Second
	// MaxBodyBytes caps every request body; larger ones get 413.
	MaxBodyBytes = httpapi.MaxBody
)

// Config configures a Region.
type Config struct {
	// Store is the cluster state. Required.
	Store *store.Store
	// RegionID is the region this process serves. Required.
	RegionID string
	// Addr is the listen address of the agent API, e.g. ":8081". Empty:
	// Start does not listen; the caller mounts Handler() itself.
	Addr string
	// PublicURL is the base URL agents and iPXE reach this API at, e.g.
	// http://10.55.0.1:8081 (plain http: Debian's iPXE has no HTTPS).
	// Required.
	PublicURL string
	// BootDir holds the agent's kernel and initramfs, served under
	// /boot/files/ with Range. Empty: /boot/ answers 503.
	BootDir string
	// KernelName and InitrdName are file names inside BootDir; defaults
	// "vmlinuz" and "initramfs.img".
	KernelName string
	InitrdName string
	// ExtraKernelArgs are appended to the agent's kernel line (each must
	// match [A-Za-z0-9_.,:/=+@-]+), e.g. "lpmos_poweroff=1".
	ExtraKernelArgs []string
	// SerialConsole is the agent's serial console=<value> (default
	// pxe.DefaultSerialConsole: ttyS0,115200).
	SerialConsole string
	// DiscoverUnknown boots MACs without a task into discovery and records
	// their hardware under /machines/{mac}.
	DiscoverUnknown bool
	// StallAfter: an installing task with no report this long becomes
	// stalled. Default 2m.
	StallAfter time.Duration
	// ProgressWindow is how long a within-stage progress report may wait
	// to be written, coalesced with the task's next ones (store.ProgressPath;
	// default store.DefaultCoalesceWindow).
	ProgressWindow time.Duration
	// ProgressPersist is how often at most a task's within-stage report is
	// written to etcd (default store.DefaultPersistInterval, capped at
	// StallAfter/4); this member's watchers see every report at once.
	ProgressPersist time.Duration
	// ReportRate is the progress reports a second the region asks its
	// agents to stay under: with more installing tasks than that, each
	// answer asks for a longer interval (agentapi/fastprogress.go). 0: no
	// limit.
	ReportRate float64
	// Images is where image sources may come from (the images directory,
	// URL rules); every image is checked against it when served. The zero
	// value serves no local file and only public URLs.
	Images imagesrc.Policy
	// SecretFile is no longer used: agent tokens are random, single-purpose
	// and stored hashed in etcd (see the package comment). Kept so
	// existing callers compile.
	SecretFile string
	// BootTokenTTL is how long the boot token of an iPXE script stays
	// redeemable; default store.DefaultBootTokenTTL (15m).
	BootTokenTTL time.Duration
	// LeaseTTL is the TTL in seconds of the /regions/{id} lease; default 10.
	LeaseTTL int64
	// Member names the etcd member this region runs beside (informational,
	// written into /regions/{id}).
	Member string
	// PollInterval is how often a long-poll re-reads its task when no watch
	// notification arrives while the task sync is not following the watch
	// (starting, or behind a burst); while it is, every 5 s. Default 250ms.
	PollInterval time.Duration
	// MaxWait bounds ?wait= of the approval long-poll; default 60s.
	MaxWait time.Duration
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// AgentRate and AgentBurst limit each source address's calls to the
	// unauthenticated endpoints (429 past them); AgentRate 0: no limit.
	AgentRate  float64
	AgentBurst int
	// MaxDiscovered caps the stored discovered machines (new MACs past it
	// get 503); 0: no cap.
	MaxDiscovered int
	// WrapListener, when set, wraps the agent API's listener (the
	// connection caps of internal/netlimit).
	WrapListener func(net.Listener) net.Listener
	// TLSCert, when set, serves the agent API and images over TLS on Addr
	// (agentapi/tls.go): its chain must include the CA, PublicURL must be
	// https and CAPin the CA's hex sha256 (put on the kernel line as
	// lpmos_ca=sha256:<CAPin>). Plain HTTP on the same port then only
	// serves /boot/* (iPXE) and /healthz. Nil: everything plain HTTP.
	TLSCert *tls.Certificate
	CAPin   string
	// GetCertificate, when set with TLSCert, hands out the current
	// certificate at each handshake (renewal without a restart); TLSCert
	// is then the first one, checked by New.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// BootURL is the plain-HTTP base URL iPXE fetches kernel and initramfs
	// from; default PublicURL with the http scheme.
	BootURL string
}

// Service names reported by State.
const (
	ServiceRegistration = "region-registration"
	ServiceAgentAPI     = "agent-api"
	ServiceTaskSync     = "task-sync"
	ServiceBootHTTP     = "boot-http"
)

// Service states reported by State.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateFailed   = "failed"   // not working now; Error says why (retried)
	StateStopped  = "stopped"  // Start returned
	StateDisabled = "disabled" // not configured
	StateExternal = "external" // Handler() is mounted by the caller
)

// ServiceState is one regional service's state for /api/v1/health.
type ServiceState struct {
	State string    `json:"state"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
}

// Region is one region's services. Build it with New, run it with Start.
type Region struct {
	cfg     Config
	st      *store.Store
	log     *slog.Logger
	handler http.Handler
	guard   *guard
	metrics *regionMetrics // agentapi/metrics.go
	health  *sharedProbe   // /healthz's etcd probe (agentapi/healthprobe.go)

	mu       sync.Mutex
	services map[string]ServiceState
	wake     chan struct{} // closed and replaced when an own task changes
	// taskWake: per task with a long-poll held, closed and replaced when
	// that task changes (the long-poll of an active task waits on its
	// own task's only: a burst of N approvals wakes each of N waiting
	// agents once, not N times each).
	taskWake map[string]*taskWaiters
	started  bool
	done     chan struct{} // closed when Start's ctx ends: releases long-polls

	files  fileChecks    // agentapi/images.go
	fast   *fastProgress // agentapi/fastprogress.go
	synced atomic.Bool   // the task sync loaded its first snapshot
	// following: the task sync follows the watch now and is not behind
	// it (every change of an own task's status wakes its long-polls at
	// once), so a held long-poll need not re-read its task every
	// PollInterval.
	following followState
	// held: long-polls of a task held now (holdWake with an id).
	held atomic.Int64
}

// followState is whether the task sync follows the watch, and a channel
// that is closed when it stops: a held long-poll sleeps its
// pollWhileFollowing and still goes back to re-reading every PollInterval
// as soon as the sync falls behind, without waking every PollInterval to
// look (20,000 wake-ups a second at 5,000 held polls).
type followState struct {
	on     atomic.Bool
	mu     sync.Mutex
	behind chan struct{} // open while following; closed (or nil) while not
}

// Store records whether the sync follows; it is called after every change
// the sync applies, so an unchanged state costs an atomic load.
func (f *followState) Store(v bool) {
	if f.on.Load() == v {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on.Load() == v {
		return
	}
	if v {
		f.behind = make(chan struct{})
	} else if f.behind != nil {
		close(f.behind)
	}
	f.on.Store(v)
}

// Load reports whether the sync follows.
func (f *followState) Load() bool { return f.on.Load() }

// state is Load and, while following, the channel closed when it stops
// (nil while not following).
func (f *followState) state() (bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on.Load() {
		return false, nil
	}
	return true, f.behind
}

// New checks cfg and builds a Region. It does not touch the network.
func New(cfg Config) (*Region, error) {
	if cfg.Store == nil {
		return nil, errors.New("agentapi: Store is required")
	}
	if cfg.RegionID == "" {
		return nil, errors.New("agentapi: RegionID is required")
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	u, err := url.Parse(cfg.PublicURL)
	if cfg.PublicURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agentapi: PublicURL %q: want the base URL agents reach this API at, like http://10.55.0.1:8081", cfg.PublicURL)
	}
	if err := checkTLS(&cfg); err != nil {
		return nil, err
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = DefaultStallAfter
	}
	if cfg.KernelName == "" {
		cfg.KernelName = DefaultKernelName
	}
	if cfg.InitrdName == "" {
		cfg.InitrdName = DefaultInitrdName
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BootTokenTTL <= 0 {
		cfg.BootTokenTTL = store.DefaultBootTokenTTL
	}
	r := &Region{
		cfg:      cfg,
		st:       cfg.Store,
		log:      cfg.Logger.With("component", "agentapi", "region", cfg.RegionID),
		services: make(map[string]ServiceState),
		wake:     make(chan struct{}),
		taskWake: map[string]*taskWaiters{},
		done:     make(chan struct{}),
	}
	r.guard = newGuard(cfg)
	r.health = newSharedProbe(r.st.Health, healthMaxAge)
	r.fast = newFastProgress(r)
	r.metrics = newRegionMetrics(cfg.RegionID)
	now := time.Now().UTC()
	for _, s := range []string{ServiceRegistration, ServiceTaskSync} {
		r.services[s] = ServiceState{State: StateStopped, Since: now}
	}
	if cfg.Addr == "" {
		r.services[ServiceAgentAPI] = ServiceState{State: StateExternal, Since: now}
	} else {
		r.services[ServiceAgentAPI] = ServiceState{State: StateStopped, Since: now}
	}
	var boot http.Handler
	if cfg.BootDir == "" {
		r.services[ServiceBootHTTP] = ServiceState{State: StateDisabled, Error: "no boot dir configured", Since: now}
	} else {
		boot, err = pxe.NewBootHandler(pxe.BootConfig{
			Decider:   r,
			AgentURL:  cfg.PublicURL,
			BaseURL:   cfg.BootURL,
			CAPin:     cfg.CAPin,
			BootDir:   cfg.BootDir,
			Kernel:    cfg.KernelName,
			Initrd:    cfg.InitrdName,
			ExtraArgs: cfg.ExtraKernelArgs,
			Logger:    cfg.Logger,

			SerialConsole: cfg.SerialConsole,
		})
		if err != nil {
			return nil, fmt.Errorf("agentapi: %w", err)
		}
		r.services[ServiceBootHTTP] = ServiceState{State: StateRunning, Since: now}
	}
	r.handler = r.routes(boot)
	if cfg.TLSCert != nil {
		r.handler = r.requireTLS(r.handler)
	}
	return r, nil
}

// Handler returns the HTTP API (agent API, images, boot path, /healthz).
func (r *Region) Handler() http.Handler { return r.handler }

// RegionID returns the region this Region serves.
func (r *Region) RegionID() string { return r.cfg.RegionID }

// State returns each regional service's state and last error, for
// /api/v1/health and the dashboard.
func (r *Region) State() map[string]ServiceState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]ServiceState, len(r.services))
	for k, v := range r.services {
		out[k] = v
	}
	return out
}

func (r *Region) setState(service, state string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.services[service]
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if cur.State == state && cur.Error == msg {
		return
	}
	r.services[service] = ServiceState{State: state, Error: msg, Since: time.Now().UTC()}
}

// taskWaiters is the wake channel of one task's held long-polls.
type taskWaiters struct {
	ch chan struct{}
	n  int // long-polls holding it
}

// notify wakes the long-polls of task id (all of them when id is empty)
// and those that wait for any task of the region.
func (r *Region) notify(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.wake)
	r.wake = make(chan struct{})
	if id != "" {
		if w := r.taskWake[id]; w != nil {
			close(w.ch)
			w.ch = make(chan struct{})
		}
		return
	}
	for _, w := range r.taskWake {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// holdWake registers a long-poll of task id (empty: of any task) and
// returns the function that gives the wake channel to wait on next, and
// the one that releases it.
func (r *Region) holdWake(id string) (wake func() <-chan struct{}, release func()) {
	if id == "" {
		return func() <-chan struct{} {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.wake
		}, func() {}
	}
	r.mu.Lock()
	w := r.taskWake[id]
	if w == nil {
		w = &taskWaiters{ch: make(chan struct{})}
		r.taskWake[id] = w
	}
	w.n++
	r.mu.Unlock()
	r.held.Add(1)
	return func() <-chan struct{} {
			r.mu.Lock()
			defer r.mu.Unlock()
			return w.ch
		}, func() {
			r.held.Add(-1)
			r.mu.Lock()
			defer r.mu.Unlock()
			if w.n--; w.n == 0 && r.taskWake[id] == w {
				delete(r.taskWake, id)
			}
		}
}

// Start runs the region until ctx is done: it registers /regions/{id} under
// a lease, claims and follows the region's tasks, detects stalls and, when
// Addr is set, serves Handler() on Addr. A service that cannot run (etcd
// unreachable, address in use) is reported by State and retried; it does not
// stop the others. Start returns nil on a clean shutdown and an error only
// when called twice.
func (r *Region) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("agentapi: region already started")
	}
	r.started = true
	r.mu.Unlock()
	r.log.Info("region starting", "public_url", r.cfg.PublicURL, "addr", r.cfg.Addr,
		"discover_unknown", r.cfg.DiscoverUnknown, "stall_after", r.cfg.StallAfter)

	var wg sync.WaitGroup
	wg.Go(func() { r.register(ctx) })
	wg.Go(func() { r.syncLoop(ctx) })
	wg.Go(func() { r.fast.pp.Run(ctx) })
	if r.cfg.Addr != "" {
		wg.Go(func() { r.serve(ctx) })
	}
	<-ctx.Done()
	close(r.done)
	wg.Wait()
	r.log.Info("region stopped")
	return nil
}

// Loaded reports whether the region's start-up loads are done: the task
// sync's first snapshot and the progress path's cache (app/memrelease.go
// returns the memory they needed to the OS after them).
func (r *Region) Loaded() bool { return r.synced.Load() && r.fast.pp.Ready() }

// sleepCtx waits d or until ctx is done; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *Region) register(ctx context.Context) {
	defer r.setState(ServiceRegistration, StateStopped, nil)
	r.setState(ServiceRegistration, StateStarting, nil)
	reg := store.Region{
		ID:        r.cfg.RegionID,
		APIURL:    r.cfg.PublicURL,
		Member:    r.cfg.Member,
		StartedAt: time.Now().UTC(),
		// Services stays empty: the registration is written once, and
		// live service states come from State() (/api/v1/health).
	}
	for {
		err := r.st.RegisterRegion(ctx, reg, r.cfg.LeaseTTL)
		if err == nil {
			r.setState(ServiceRegistration, StateRunning, nil)
			r.log.Info("region registered", "ttl_s", r.cfg.LeaseTTL)
			<-ctx.Done() // the store keeps the lease alive until ctx ends
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.setState(ServiceRegistration, StateFailed, err)
		r.log.Error("region registration failed, retrying", "err", err)
		if errors.Is(err, store.ErrInvalid) || !sleepCtx(ctx, 2*time.Second) {
			return
		}
	}
}

func (r *Region) serve(ctx context.Context) {
	defer r.setState(ServiceAgentAPI, StateStopped, nil)
	r.setState(ServiceAgentAPI, StateStarting, nil)
	var ln net.Listener
	for {
		var err error
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, "tcp", r.cfg.Addr)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		r.setState(ServiceAgentAPI, StateFailed, err)
		r.log.Error("agent API cannot listen, retrying in 5s", "addr", r.cfg.Addr, "err", err)
		if !sleepCtx(ctx, 5*time.Second) {
			return
		}
	}
	if r.cfg.WrapListener != nil {
		ln = r.cfg.WrapListener(ln)
	}
	if r.cfg.TLSCert != nil {
		ln = newSniffListener(ln, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			Certificates:   []tls.Certificate{*r.cfg.TLSCert},
			GetCertificate: r.cfg.GetCertificate,
		}, r.log)
	}
	srv := &http.Server{
		Handler:           r.handler,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	r.setState(ServiceAgentAPI, StateRunning, nil)
	r.log.Info("agent API listening", "addr", ln.Addr().String(), "tls", r.cfg.TLSCert != nil)
	select {
	case err := <-errc:
		r.setState(ServiceAgentAPI, StateFailed, err)
		r.log.Error("agent API stopped", "err", err)
		return
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		r.log.Warn("agent API shutdown", "err", err)
		_ = srv.Close()
	}
	<-errc
}
