// Package powermgr is a region's power manager (issue 13): it performs
// power actions on the BMCs of the region's machines (BMC networks are per
// site, so only the region that owns a task touches its BMC), drives the
// lifecycle through them and polls power states.
//
//   - A task with a BMC that becomes ready (created or retried, claimed by
//     the region) gets its next boot set to PXE (once) and is powered on,
//     or power-cycled when it is on already. A task that is past ready by
//     then (its agent already runs) is left alone.
//   - A task that completed gets its next boot set to disk and is
//     power-cycled into the installed OS (its agent, told the machine is
//     power-managed, does not reboot by itself).
//   - Actions asked through the API (/power-requests/{region}/...) are
//     performed in order per task.
//   - Each action and its result is a task event (kind "power"), with the
//     BMC's own error on failure; failures are retried with backoff.
//   - Power states are polled every PollInterval with bounded concurrency
//     and stored at /tasks/{id}/power when they change.
//
// Passwords never leave this package except to the BMC: errors are
// scrubbed of them before they become events or log lines.
package powermgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/power"
	"github.com/lpmos/lpmos/store"
)

// Defaults of Config.
const (
	DefaultPollInterval = 60 * time.Second
	DefaultConcurrency  = 8
	DefaultRetries      = 3
	DefaultBackoff      = 2 * time.Second
	DefaultRebootDelay  = 5 * time.Second
	DefaultSettleDelay  = 2 * time.Second
	// finishWithin: a completion older than this is not rebooted (the
	// agent reboots by itself after 10 minutes without the region's
	// power cycle, e.g. while the region was down).
	finishWithin = 9 * time.Minute
	maxBackoff   = 60 * time.Second
)

// Config configures a Manager; zero values pick the defaults.
type Config struct {
	Store    *store.Store
	RegionID string
	// PollInterval is how often power states are read; negative: never.
	PollInterval time.Duration
	// Concurrency bounds the BMCs polled at once.
	Concurrency int
	// Retries is how many times a failed BMC call is tried again (with
	// backoff) before the action is given up; negative: none.
	Retries int
	// Backoff is the first wait before a retry; it doubles, up to a minute.
	Backoff time.Duration
	// Timeout bounds one BMC call (power.DefaultTimeout when zero).
	Timeout time.Duration
	// RebootDelay is the wait between a task's completion and its reboot
	// to disk, so the agent's last writes settle.
	RebootDelay time.Duration
	// SettleDelay is the wait between a task becoming ready and its power-on,
	// for a machine that is booting already (or a live agent) to show.
	SettleDelay time.Duration
	// NewDriver builds a BMC's driver; default power.New.
	NewDriver func(power.BMC) (power.Driver, error)
	Logger    *slog.Logger
	// Health, when set, is told the manager's state.
	Health func(state string, err error)
	// Observe, when set, is told every BMC call: the step ("power on",
	// "status", ...), its error (nil: done) and how long it took (metrics).
	Observe func(step string, err error, took time.Duration)
}

// Manager is one region's power manager. Build it with New, run it with Run.
type Manager struct {
	cfg    Config
	st     *store.Store
	log    *slog.Logger
	sem    chan struct{} // polls in flight
	loaded atomic.Bool   // Run loaded its first snapshot

	mu      sync.Mutex
	queues  map[string][]job // per task, performed in order by one goroutine
	running map[string]bool
	queued  map[string]bool // request keys and "poll:"+id already queued
	written map[string]store.PowerState
	wg      sync.WaitGroup
}

// New checks cfg and builds a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.RegionID == "" {
		return nil, errors.New("powermgr: Store and RegionID are required")
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = DefaultRebootDelay
	}
	if cfg.SettleDelay == 0 {
		cfg.SettleDelay = DefaultSettleDelay
	}
	if cfg.NewDriver == nil {
		cfg.NewDriver = power.New
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg: cfg, st: cfg.Store,
		log:     cfg.Logger.With("component", "power", "region", cfg.RegionID),
		sem:     make(chan struct{}, cfg.Concurrency),
		queues:  map[string][]job{},
		running: map[string]bool{},
		queued:  map[string]bool{},
		written: map[string]store.PowerState{},
	}, nil
}

// job is one unit of work on one task's BMC.
type job struct {
	kind    string // "boot", "finish", "request", "poll"
	attempt int    // boot, finish
	req     store.PowerRequest
}

// tracked is what the run loop knows of one task of the region.
type tracked struct {
	mac     string
	created time.Time
	status  wire.Status
	attempt int
	bmc     bool
}

func (m *Manager) setHealth(state string, err error) {
	if m.cfg.Health != nil {
		m.cfg.Health(state, err)
	}
}

// Run follows the region's tasks until ctx ends: a snapshot, then the
// watch from its revision (a compacted watch lists again).
func (m *Manager) Run(ctx context.Context) error {
	m.setHealth("starting", nil)
	defer func() {
		m.wg.Wait()
		m.setHealth("stopped", nil)
	}()
	for ctx.Err() == nil {
		own := map[string]*tracked{}
		rev, err := m.snapshot(ctx, own)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			m.setHealth("failed", err)
			m.log.Warn("power: list tasks failed, retrying", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		m.setHealth("running", nil)
		m.loaded.Store(true)
		m.follow(ctx, rev, own)
	}
	return nil
}

// Loaded reports whether Run has loaded its first snapshot of the tasks.
func (m *Manager) Loaded() bool { return m.loaded.Load() }

func (m *Manager) snapshot(ctx context.Context, own map[string]*tracked) (int64, error) {
	tasks, rev, err := m.st.TaskSummaries(ctx) // the store's task index: spec, status, BMC, power (not every key of every task)
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		if t.Spec.RegionID != m.cfg.RegionID {
			continue
		}
		tr := &tracked{mac: t.Spec.TargetMAC, created: t.Spec.CreatedAt, status: t.Status.Status, attempt: t.Status.Attempt, bmc: t.BMC != nil}
		own[t.ID] = tr
		if t.Power != nil {
			m.mu.Lock()
			m.written[t.ID] = *t.Power
			m.mu.Unlock()
		}
		m.react(ctx, t.ID, tr)
	}
	reqs, _, err := m.st.PowerRequests(ctx, m.cfg.RegionID)
	if err != nil {
		return 0, err
	}
	for _, r := range reqs {
		m.enqueue(ctx, r.TaskID, job{kind: "request", req: r})
	}
	return rev, nil
}

func (m *Manager) follow(ctx context.Context, rev int64, own map[string]*tracked) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := m.st.WatchStored(wctx, rev+1, store.KindTaskCreated, store.KindTaskDeleted, store.KindBMC, store.KindStatus, store.KindPowerRequest) // BMC, status, power: no live progress
	var tick <-chan time.Time
	if m.cfg.PollInterval > 0 {
		t := time.NewTicker(m.cfg.PollInterval)
		defer t.Stop()
		tick = t.C
		m.pollAll(ctx, own) // at once: the dashboard should not wait a minute
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-ch:
			if !ok || c.Kind == store.KindWatchRestart {
				return
			}
			m.change(ctx, c, own)
		case <-tick:
			m.pollAll(ctx, own)
		}
	}
}

func (m *Manager) change(ctx context.Context, c store.Change, own map[string]*tracked) {
	switch c.Kind {
	case store.KindTaskCreated:
		if c.Spec.RegionID == m.cfg.RegionID {
			own[c.TaskID] = &tracked{mac: c.Spec.TargetMAC, created: c.Spec.CreatedAt}
		}
	case store.KindTaskDeleted:
		delete(own, c.TaskID)
		m.mu.Lock()
		delete(m.written, c.TaskID)
		m.mu.Unlock()
	case store.KindBMC:
		if tr, ok := own[c.TaskID]; ok {
			had := tr.bmc
			tr.bmc = c.BMC != nil
			if tr.bmc && !had {
				if tr.status == wire.StatusReady { // never reboot a completed machine because it got a BMC
					m.react(ctx, c.TaskID, tr)
				}
				m.enqueuePoll(ctx, c.TaskID)
			}
		}
	case store.KindStatus:
		if tr, ok := own[c.TaskID]; ok {
			tr.status, tr.attempt = c.Status.Status, c.Status.Attempt
			m.react(ctx, c.TaskID, tr)
		}
	case store.KindPowerRequest:
		if r := c.PowerRequest; r.RegionID == m.cfg.RegionID {
			m.enqueue(ctx, r.TaskID, job{kind: "request", req: *r})
		}
	}
}

// react queues the lifecycle step a task's status asks for. The steps
// check their lifecycle mark in etcd, so a repeat is harmless.
func (m *Manager) react(ctx context.Context, id string, tr *tracked) {
	if !tr.bmc {
		return
	}
	switch tr.status {
	case wire.StatusReady:
		m.enqueue(ctx, id, job{kind: "boot", attempt: tr.attempt})
	case wire.StatusCompleted:
		m.enqueue(ctx, id, job{kind: "finish", attempt: tr.attempt})
	}
}

// pollAll queues a status read of the newest BMC task of every machine.
func (m *Manager) pollAll(ctx context.Context, own map[string]*tracked) {
	newest := map[string]string{} // mac -> task id
	for id, tr := range own {
		if !tr.bmc {
			continue
		}
		if cur, ok := newest[tr.mac]; !ok || own[cur].created.Before(tr.created) {
			newest[tr.mac] = id
		}
	}
	for _, id := range newest {
		m.enqueuePoll(ctx, id)
	}
}

func (m *Manager) enqueuePoll(ctx context.Context, id string) {
	m.enqueue(ctx, id, job{kind: "poll"})
}

// enqueue adds j to the task's queue and starts its worker if idle.
func (m *Manager) enqueue(ctx context.Context, id string, j job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dedup := ""
	switch j.kind {
	case "request":
		dedup = j.req.Key
	case "poll":
		dedup = "poll:" + id
	default:
		dedup = fmt.Sprintf("%s:%s:%d", j.kind, id, j.attempt)
	}
	if m.queued[dedup] {
		return
	}
	m.queued[dedup] = true
	m.queues[id] = append(m.queues[id], j)
	if m.running[id] {
		return
	}
	m.running[id] = true
	m.wg.Go(func() { m.drain(ctx, id) })
}

func (m *Manager) drain(ctx context.Context, id string) {
	for {
		m.mu.Lock()
		q := m.queues[id]
		if len(q) == 0 || ctx.Err() != nil {
			delete(m.queues, id)
			delete(m.running, id)
			m.mu.Unlock()
			return
		}
		j := q[0]
		m.queues[id] = q[1:]
		m.mu.Unlock()
		m.perform(ctx, id, j)
		m.mu.Lock()
		switch j.kind {
		case "request":
			delete(m.queued, j.req.Key)
		case "poll":
			delete(m.queued, "poll:"+id)
		default:
			delete(m.queued, fmt.Sprintf("%s:%s:%d", j.kind, id, j.attempt))
		}
		m.mu.Unlock()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// scrub removes the password from a BMC's error text.
func scrub(s, password string) string {
	if password == "" {
		return s
	}
	return strings.ReplaceAll(s, password, "********")
}
