package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// The agent progress hot path (issue 14). A region keeps, from one watch
// of /tasks/, what checking a progress report needs: each task's region,
// MAC, status, stored progress and session, with their mod revisions. A
// report is then checked without reading etcd, and written by one writer
// goroutine that groups reports into few transactions:
//
//   - a report that changes the stage, the run or the status (the first
//     report moves an approved or stalled task to installing) is queued
//     for the writer at once (never coalesced, never held for the persist
//     interval), published to this process's watchers at once
//     (store/live.go) and answered at once with the status it will have
//     ("answered on acceptance", below); past the backpressure bound its
//     answer waits for the commit, as before;
//   - the final report (completed at 100) is always written before its
//     answer, and moves the task to completed in the same transaction
//     (what Transition would do after it, without its reads): the agent
//     stops reporting after it, so nothing would restore it;
//   - a report that only moves the percentage within a stage is coalesced:
//     answered at once, published to this process's watchers at once, kept
//     as the task's latest pending report (a newer one replaces it) and
//     written with the others at the first window after the task's persist
//     interval (DefaultPersistInterval) since its last write; the task's
//     next change supersedes it (it is not written).
//
// Every write is guarded by the mod revisions the check used (status,
// progress, session): if anything changed meanwhile (an operator cancel,
// a new session, another writer), the transaction fails and each of its
// reports goes through the authoritative path (ReportAgentProgress, which
// reads etcd), so a stale cache never lets a report through that etcd
// would refuse. One writer and the progress guard keep reports in order:
// a task's reports are written in the order they were accepted, at most
// one write of a task in flight, and one that lost a race is refused by
// the guard, never written late. A later report of a task is judged
// against the newest one accepted (written or not: cachedTask.accepted).
//
// Answered on acceptance (what a 200 means for a stage change). When
// 5,000 agents change stage in the same second, writing each change before
// its answer queued every answer behind thousands of transactions (the
// fleet's report p99 was the stage-change waves). The agent needs no
// durable write before its 200: every report carries its whole state
// (attempt, run, seq, stage, percentage). A stage or status change
// answered 200 has passed every check the write will make, is in the
// writer's queue in order, and is written within milliseconds (the
// writer takes it at once); if a guard then fails (a cancel, a new
// session landed first) the authoritative path decides, and a refusal
// drops the report (logged at debug): the agent learns it at its next
// report (e.g. "task is cancelled"), the same window as a cancel that
// arrives just after a synchronous commit. A transient etcd error is
// retried (with backoff, in order: the task's later reports wait) until
// the write succeeds or is refused. Lost are only the answered reports
// not yet written when the process crashes (a stop writes them first,
// for up to DrainTimeout): the task then holds
// the previous stage, and the agent's next report restores the change
// when it is still in that stage (it is a stage change from what is
// stored, written with its stage event). An agent that is a stage further
// by then (the lost stage was shorter than the restart) is refused with
// the stage to resend from (ProgressBehindError, wire.Error.ResendFrom):
// it sends its last report of each missing stage again, then goes on.
// Backpressure: at most SetEarlyLimit's count of answered reports are
// unwritten at once (DefaultEarlyLimit), and none are answered early while
// the writer is failing (its last transaction returned an error) or has
// landed none for DefaultEarlyStall: a region whose etcd is slow or down
// answers stage changes after their commit, as before, so it never piles
// up answers it cannot keep. Reports the cache cannot decide wait for
// the task's unwritten ones (WaitWritten) before taking the
// authoritative path, so etcd is never asked to judge a report against a
// state older than what the agent was told.

// DefaultCoalesceWindow is how often the writer looks for within-stage
// reports to write.
const DefaultCoalesceWindow = 100 * time.Millisecond

// DefaultPersistInterval is how often at most a task's within-stage
// report is written to etcd (etcd keeps every version until compaction:
// at 1 report a second, writing each one cost ~250 bytes a second per
// install). Accepted reports reach this process's watchers at once
// (store/live.go); stage, run and status changes and the final report
// are written at once, whatever the interval. Other members' dashboards
// see a within-stage report only once it is written, so the interval is
// also how often their progress bars move: 10 s keeps them moving at a
// quarter of the bytes of writing every report.
const DefaultPersistInterval = 10 * time.Second

// DefaultEarlyLimit bounds the stage and status changes answered on
// acceptance and not yet written (about 0.5 KB each): beyond it a change
// waits for its commit.
const DefaultEarlyLimit = 8192

// DefaultEarlyStall: while answered reports are unwritten and none has
// been written for this long, changes wait for their commit.
const DefaultEarlyStall = 2 * time.Second

// CompletedReason is the reason of the move to completed that the
// agent's final report (completed at 100) makes.
const CompletedReason = "install completed"

// maxTxnOps is etcd's default --max-txn-ops: a transaction holds at most
// this many comparisons and this many operations.
const maxTxnOps = 128

// cachedTask is what checking and guarding a report needs of one task,
// and nothing more (no spec, hardware or message): about 200 bytes a task.
type cachedTask struct {
	region, mac string // interned
	hasSpec     bool
	hasStatus   bool
	status      Status
	attempt     int // the status's
	statusRev   int64
	prog        *progMark // the stored report
	progRev     int64
	sessHash    string // "": no session
	sessAttempt int
	sessRun     int
	sessRev     int64
	events      int            // events of the task, never fewer (for the history bound)
	foldRev     int64          // the revision of the task's last fold (store/fold.go): its deletes take none
	wroteAt     time.Time      // when this path last wrote the task's progress
	pending     *wire.Progress // coalesced, not yet written
	accepted    *progMark      // the newest report answered 200 by this path
	acceptedAt  time.Time      // when it was answered
	// moving is the statusRev from which a report answered on acceptance
	// moves the task to installing (0: none): while the status is still
	// that one, the task is installing for the reports that follow.
	moving int64
}

// progMark is what ordering needs of a report.
type progMark struct {
	seq              int64
	attempt, run, pc int
	stage            string // interned
}

func markOf(p *wire.Progress) *progMark {
	if p == nil {
		return nil
	}
	return &progMark{seq: p.Seq, attempt: p.Attempt, run: p.Run, pc: p.Percentage, stage: internStage(p.Stage)}
}

// progress is the mark as a report, for checkOrder.
func (m *progMark) progress() *wire.Progress {
	if m == nil {
		return nil
	}
	return &wire.Progress{Seq: m.seq, Attempt: m.attempt, Run: m.run, Percentage: m.pc, Stage: m.stage}
}

func internStage(s string) string {
	if i := stageIndex(s); i >= 0 {
		return stageOrder[i].name
	}
	return s
}

// ProgressPath is the cached, coalescing progress path of one region.
type ProgressPath struct {
	s       *Store
	region  string
	window  time.Duration
	persist time.Duration

	mu       sync.Mutex
	tasks    map[string]*cachedTask
	regions  map[string]string // interned region ids
	ready    bool
	queue    []*progressReq // reports to write at once
	kick     chan struct{}
	pending  int             // tasks with a pending report
	inflight map[string]bool // tasks with a write in flight: their next waits

	// Answered on acceptance: reports answered and not yet written.
	earlyLimit int
	earlyStall time.Duration
	early      int                      // in all
	earlyOf    map[string]int           // per task (kept across cache reloads)
	earlyMoved time.Time                // when one was last written (or the first queued)
	earlyWait  map[string]chan struct{} // WaitWritten's: closed when the task's are written
	failing    bool                     // the writer's last transaction returned an error

	hold chan struct{} // tests (HoldWriter): the writer waits for it before a round
}

// maxInflightTxns bounds the batch transactions in flight at once.
const maxInflightTxns = 16

type progressReq struct {
	id      string
	p       wire.Progress
	sessRev int64             // the session the report was checked against
	done    chan progressDone // nil: coalesced or early, nobody waits
	final   bool              // completed at 100: the task completes with it
	early   bool              // a change answered on acceptance: written as if waited for
	// superseded is the coalesced report this one replaced unwritten. The
	// batch needs none (its guards are the cache's, which accepted it), but
	// the authoritative path judges order against what etcd holds: it
	// writes superseded first, or a stage change that followed a coalesced
	// end of stage (configuring 100, then completed) reads as a skip.
	superseded *wire.Progress

	// Filled by the writer from the cache when it writes the report.
	from                       Status
	statusRev, progRev, events int64
	stageEvent                 bool // the stored report is of another stage or attempt
	complete                   bool // final, from installing: written with the move to completed
}

// coalesced: a within-stage report the writer took from the pending ones.
func (r *progressReq) coalesced() bool { return r.done == nil && !r.early }

type progressDone struct {
	res ProgressResult
	err error
}

// NewProgressPath returns the progress path of region; Run feeds its
// cache and writes its reports. window <= 0 picks DefaultCoalesceWindow.
func (s *Store) NewProgressPath(region string, window time.Duration) *ProgressPath {
	if window <= 0 {
		window = DefaultCoalesceWindow
	}
	return &ProgressPath{s: s, region: region, window: window, persist: DefaultPersistInterval, tasks: map[string]*cachedTask{}, regions: map[string]string{},
		kick: make(chan struct{}, 1), inflight: map[string]bool{},
		earlyLimit: DefaultEarlyLimit, earlyStall: DefaultEarlyStall, earlyOf: map[string]int{}, earlyWait: map[string]chan struct{}{}}
}

// SetEarlyLimit bounds the stage and status changes answered on
// acceptance and not yet written (limit <= 0: every change waits for its
// commit), and how long the writer may land none of them before changes
// wait again (stall <= 0: DefaultEarlyStall).
func (pp *ProgressPath) SetEarlyLimit(limit int, stall time.Duration) {
	if stall <= 0 {
		stall = DefaultEarlyStall
	}
	pp.mu.Lock()
	pp.earlyLimit, pp.earlyStall = max(limit, 0), stall
	pp.mu.Unlock()
}

// Unwritten counts the reports answered on acceptance and not yet written
// (the lpmos_agent_progress_unwritten gauge).
func (pp *ProgressPath) Unwritten() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.early
}

// WaitWritten waits until no report of task id answered on acceptance is
// unwritten (written, or refused by the authoritative path): what takes
// the authoritative way then reads a state that holds every change the
// agent was told was accepted.
func (pp *ProgressPath) WaitWritten(ctx context.Context, id string) error {
	pp.mu.Lock()
	if pp.earlyOf[id] == 0 {
		pp.mu.Unlock()
		return nil
	}
	ch := pp.earlyWait[id]
	if ch == nil {
		ch = make(chan struct{})
		pp.earlyWait[id] = ch
	}
	pp.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("progress of task %s: waiting for its accepted reports: %w", id, ctx.Err())
	}
}

// earlyOKLocked says whether a change may be answered on acceptance now:
// under the bound, the writer not failing, and landing them.
func (pp *ProgressPath) earlyOKLocked(now time.Time) bool {
	if pp.early >= pp.earlyLimit || pp.failing {
		return false
	}
	return pp.early == 0 || now.Sub(pp.earlyMoved) < pp.earlyStall
}

// earlyLandedLocked accounts for reqs' early reports, written or refused
// (each request lands once).
func (pp *ProgressPath) earlyLandedLocked(reqs []*progressReq) {
	for _, r := range reqs {
		if !r.early {
			continue
		}
		pp.early--
		pp.earlyMoved = time.Now()
		if n := pp.earlyOf[r.id] - 1; n > 0 {
			pp.earlyOf[r.id] = n
			continue
		}
		delete(pp.earlyOf, r.id)
		if ch := pp.earlyWait[r.id]; ch != nil {
			close(ch)
			delete(pp.earlyWait, r.id)
		}
	}
}

func (pp *ProgressPath) setFailing(failing bool) {
	pp.mu.Lock()
	pp.failing = failing
	pp.mu.Unlock()
}

// SetPersistInterval sets how often at most a task's within-stage report
// is written (d <= 0: every window); call it before Run.
func (pp *ProgressPath) SetPersistInterval(d time.Duration) {
	pp.mu.Lock()
	pp.persist = max(d, 0)
	pp.mu.Unlock()
}

// ErrNotCached says the fast path cannot decide: the caller uses the
// authoritative path.
var ErrNotCached = errors.New("progress: not decidable from the cache")

// Run loads the cache, follows the watch and runs the writer until ctx
// ends. A watch that must restart reloads the cache; meanwhile every
// report takes the authoritative path.
func (pp *ProgressPath) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { pp.writer(ctx) })
	for ctx.Err() == nil {
		err := pp.follow(ctx)
		pp.mu.Lock()
		pp.ready = false
		pp.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
		pp.s.log.Warn("progress cache: reloading", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	wg.Wait()
}

func (pp *ProgressPath) follow(ctx context.Context) error {
	pp.mu.Lock()
	pp.tasks = map[string]*cachedTask{}
	pp.pending = 0
	pp.mu.Unlock()
	// In chunks at one revision, as the task index loads: one response of
	// every task key (events included) was most of the peak heap of a
	// region with 10,000 tasks.
	rev, err := pp.s.rangeChunked(ctx, prefixTasks, indexChunk, func(kvs []*mvccpb.KeyValue) {
		pp.mu.Lock()
		for _, kv := range kvs {
			pp.applyLocked(string(kv.Key), kv.Value, kv.ModRevision, false, true)
		}
		pp.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("load tasks: %w", err)
	}
	pp.mu.Lock()
	pp.ready = true
	pp.mu.Unlock()
	cur := pp.s.watches.subscribe(ctx, pp.s, rev+1) // the store's shared watch (store/sharedwatch.go)
	defer cur.close()
	for {
		es, _, err := cur.next(ctx, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch ended: %w", err)
		}
		pp.mu.Lock()
		for _, e := range es {
			if ev := e.ev; ev != nil && strings.HasPrefix(string(ev.Kv.Key), prefixTasks) {
				pp.applyLocked(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision, ev.Type == clientv3.EventTypeDelete, ev.IsCreate())
			}
		}
		pp.mu.Unlock()
	}
}

// applyLocked folds one key's change into the cache. A value older than
// what the writer already stored locally is ignored.
func (pp *ProgressPath) applyLocked(key string, val []byte, rev int64, del, created bool) {
	id, kind, ok := taskKeyKind(key)
	if !ok {
		return
	}
	t := pp.tasks[id]
	if t == nil {
		if del {
			return
		}
		t = &cachedTask{}
		pp.tasks[id] = t
	}
	switch kind {
	case "spec":
		if del {
			if t.pending != nil {
				pp.pending--
			}
			delete(pp.tasks, id)
			return
		}
		var sp struct {
			RegionID  string `json:"region_id"`
			TargetMAC string `json:"target_mac"`
		}
		if json.Unmarshal(val, &sp) == nil {
			r, ok := pp.regions[sp.RegionID]
			if !ok {
				r = sp.RegionID
				pp.regions[r] = r
			}
			t.region, t.mac, t.hasSpec = r, sp.TargetMAC, true
		}
	case "status":
		if del || rev <= t.statusRev { // <=: the writer's own commit, already in the cache
			return
		}
		var st StatusRecord
		if json.Unmarshal(val, &st) == nil {
			t.hasStatus, t.status, t.attempt, t.statusRev = true, st.Status, st.Attempt, rev
		}
	case "progress":
		if rev < t.progRev || rev == t.progRev && !del { // ==: the writer's own commit, already in the cache
			return
		}
		t.progRev = rev
		t.prog = nil
		if del {
			t.progRev = 0
			return
		}
		if p, err := decodeProgress(id, val); err == nil {
			t.prog = markOf(&p)
		}
	case "session":
		if rev < t.sessRev {
			return
		}
		t.sessHash, t.sessRev = "", rev
		if del {
			t.sessRev = 0
			return
		}
		var se Session
		if json.Unmarshal(val, &se) == nil {
			t.sessHash, t.sessAttempt, t.sessRun = se.SHA256, se.Attempt, se.Run
		}
	case "events":
		switch {
		case del:
			if rev != t.foldRev { // a fold's deletes take none: the events are under the folded key
				t.events = max(0, t.events-1)
			}
		case isFolded(val) && t.hasStatus:
			// A fold (store/fold.go) seen on the watch (the load reads a
			// task's events before its status): the events were counted
			// under their keys, the folded key adds none. It is put before
			// the keys it replaces are deleted.
			t.foldRev = rev
		case created:
			t.events += eventCount(val) // a delete takes one: over, never under
		}
	}
}

// Report checks an agent's progress report p (seq, stage and percentage
// already validated by the caller) against the cache and writes it: at
// once when it changes the stage, run or status (answered on acceptance,
// under the backpressure bound; the final report after its commit), else
// coalesced. token is
// the agent's session token of task id, mac the MAC it names ("" for
// none). ErrNotCached (or any error) means the caller must take the
// authoritative path, which also words the refusal.
func (pp *ProgressPath) Report(ctx context.Context, id, token, mac string, p wire.Progress) (ProgressResult, error) {
	i := stageIndex(p.Stage)
	if i < 0 || len(p.Partitions) > 0 {
		return ProgressResult{}, ErrNotCached
	}
	if st := stageOrder[i]; p.Percentage < st.from || p.Percentage > st.to {
		return ProgressResult{}, ErrNotCached
	}
	h := hashSecret(token)
	now := time.Now().UTC()
	pp.mu.Lock()
	t := pp.tasks[id]
	if !pp.ready || t == nil || !t.hasSpec || !t.hasStatus || t.sessHash == "" || t.region != pp.region ||
		(mac != "" && mac != t.mac) || !hashesEqual(t.sessHash, h) || t.sessAttempt != t.attempt {
		pp.mu.Unlock()
		return ProgressResult{}, ErrNotCached
	}
	from := t.status
	switch from {
	case wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled:
	default:
		pp.mu.Unlock()
		return ProgressResult{}, ErrNotCached
	}
	p.TaskID, p.Attempt, p.Run, p.UpdatedAt = id, t.attempt, t.sessRun, now
	latest := t.prog
	if a := t.accepted; a != nil && (latest == nil || a.attempt > latest.attempt || a.attempt == latest.attempt && a.seq > latest.seq) {
		latest = a
	}
	if latest != nil && latest.attempt == p.Attempt && p.Seq <= latest.seq {
		pp.mu.Unlock()
		return ProgressResult{}, ErrNotCached // a repeat or an older report: the authoritative path answers it
	}
	if checkOrder(latest.progress(), p.Attempt, p) != nil {
		pp.mu.Unlock()
		return ProgressResult{}, ErrNotCached
	}
	task := Task{ID: id, Status: StatusRecord{Status: wire.StatusInstalling, Attempt: t.attempt, UpdatedAt: now}}
	t.accepted, t.acceptedAt = markOf(&p), now
	installing := from == wire.StatusInstalling || t.moving == t.statusRev // an accepted change moves it
	if installing && latest != nil && latest.attempt == p.Attempt && latest.run == p.Run &&
		latest.stage == p.Stage && p.Stage != wire.StageCompleted {
		// Within a stage: the latest report wins, written within a window.
		if t.pending == nil {
			pp.pending++
		}
		t.pending = &p
		pp.mu.Unlock()
		pp.s.live.publish(id, p)
		task.Progress = &p
		return ProgressResult{Task: task}, nil
	}
	// A change: written at once. The task's pending report, older and of
	// the same run, is superseded by it and never written (so what etcd
	// holds always follows the agent's order).
	var superseded *wire.Progress
	if t.pending != nil {
		superseded = t.pending
		t.pending = nil
		pp.pending--
	}
	req := &progressReq{id: id, p: p, sessRev: t.sessRev,
		final: p.Stage == wire.StageCompleted && p.Percentage == 100, superseded: superseded}
	early := !req.final && pp.earlyOKLocked(now)
	if req.early = early; early {
		if from != wire.StatusInstalling {
			t.moving = t.statusRev
		}
		if pp.early == 0 {
			pp.earlyMoved = now
		}
		pp.early++
		pp.earlyOf[id]++
	} else {
		req.done = make(chan progressDone, 1)
	}
	pp.queue = append(pp.queue, req)
	pp.mu.Unlock()
	select {
	case pp.kick <- struct{}{}:
	default:
	}
	if early { // req is the writer's now
		// Answered now with the status it will have; written in order
		// right after (see "Answered on acceptance" above).
		pp.s.live.publish(id, p)
		task.Progress = &p
		return ProgressResult{Task: task}, nil
	}
	select {
	case d := <-req.done:
		return d.res, d.err
	case <-ctx.Done():
		return ProgressResult{}, ctx.Err()
	}
}

// Ready reports whether the cache is loaded (else every report takes the
// authoritative path).
func (pp *ProgressPath) Ready() bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.ready
}

// LastAccepted is when this path last answered a report of task id in
// the task's current attempt (zero: none since the cache was loaded). The
// stall check counts it as a sign of life: a within-stage report is
// answered at once and written up to the persist interval later, later
// still while etcd's writes lag.
func (pp *ProgressPath) LastAccepted(id string) time.Time {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	t := pp.tasks[id]
	if t == nil || t.accepted == nil || t.accepted.attempt != t.attempt {
		return time.Time{}
	}
	return t.acceptedAt
}

// InstallingTasks counts the region's installing tasks in the cache
// (with those an accepted, unwritten report moves to installing).
func (pp *ProgressPath) InstallingTasks() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	n := 0
	for _, t := range pp.tasks {
		// A move to installing answered on acceptance counts before it is
		// written: the agents' report interval (agentapi's nextReportMS)
		// must not fall back to 1s while the writer is behind.
		if t.region == pp.region && t.hasStatus && (t.status == wire.StatusInstalling || t.moving == t.statusRev) {
			n++
		}
	}
	return n
}

// writer commits queued reports at once and pending ones every window.
// Rounds overlap (group commit): a report waits for no other task's
// write, only for its own task's write in flight, so a stage change is
// not held behind a round of other tasks' transactions.
//
// Writes run on wctx, which outlives ctx by up to DrainTimeout: when the
// region stops, the changes already answered on acceptance (and any
// queued report) are written before the writer returns, so a stop loses
// none of them; only a crash does (see "Answered on acceptance").
func (pp *ProgressPath) writer(ctx context.Context) {
	tick := time.NewTicker(pp.window)
	defer tick.Stop()
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	var wg sync.WaitGroup
	txns := make(chan struct{}, maxInflightTxns)
	slow := make(chan struct{}, 32) // authoritative writes read etcd: a bounded few at a time
	for {
		flushPending := false
		select {
		case <-ctx.Done():
			pp.drain(wctx, wcancel, &wg, txns, slow)
			pp.failQueued(ctx.Err())
			return
		case <-pp.kick:
		case <-tick.C:
			flushPending = true
		}
		pp.writeOnce(wctx, flushPending, &wg, txns, slow)
	}
}

// DrainTimeout bounds how long a stopping region's writer goes on writing
// the reports it answered and queued.
const DrainTimeout = 5 * time.Second

// drain writes what is queued, round after round (a task's next report
// waits for its write in flight), until nothing is or DrainTimeout ends.
func (pp *ProgressPath) drain(wctx context.Context, wcancel context.CancelFunc, wg *sync.WaitGroup, txns, slow chan struct{}) {
	stop := time.AfterFunc(DrainTimeout, wcancel)
	defer stop.Stop()
	for {
		wg.Wait()
		pp.mu.Lock()
		more := len(pp.queue) > 0
		pp.mu.Unlock()
		if !more || wctx.Err() != nil {
			return
		}
		pp.writeOnce(wctx, false, wg, txns, slow)
	}
}

func (pp *ProgressPath) failQueued(err error) {
	pp.mu.Lock()
	q := pp.queue
	pp.queue = nil
	pp.mu.Unlock()
	for _, r := range q {
		if r.done != nil {
			r.done <- progressDone{err: err}
		} // an early one is lost, as in a crash (see above)
	}
	pp.mu.Lock()
	pp.earlyLandedLocked(q)
	pp.mu.Unlock()
}

// landed ends the writes in flight of reqs' tasks; the writer takes the
// reports that waited for them.
func (pp *ProgressPath) landed(reqs []*progressReq) {
	pp.mu.Lock()
	for _, r := range reqs {
		delete(pp.inflight, r.id)
	}
	pp.earlyLandedLocked(reqs)
	more := len(pp.queue) > 0
	pp.mu.Unlock()
	if more {
		select {
		case pp.kick <- struct{}{}:
		default:
		}
	}
}

// writeOnce takes every queued report whose task has no write in flight
// (and, when flushPending, every such pending one) and commits them in as
// few transactions as etcd allows, without waiting for them. Each report
// is checked again against the cache as it is now (a change the watch
// brought meanwhile sends it the authoritative way) and guarded by the
// revisions of that check. A task has at most one write in flight, so its
// reports land in the order they were accepted.
func (pp *ProgressPath) writeOnce(ctx context.Context, flushPending bool, wg *sync.WaitGroup, txns, slowSem chan struct{}) {
	pp.mu.Lock()
	for hold := pp.hold; hold != nil && ctx.Err() == nil; hold = pp.hold {
		pp.mu.Unlock()
		select {
		case <-hold:
		case <-ctx.Done():
		}
		pp.mu.Lock()
	}
	queued := pp.queue
	pp.queue = nil
	var batch, slow, later []*progressReq
	for _, r := range queued {
		if pp.inflight[r.id] { // one write of a task at a time, in order
			later = append(later, r)
			continue
		}
		pp.inflight[r.id] = true
		batch = append(batch, r)
	}
	if flushPending && pp.pending > 0 {
		now := time.Now()
		for id, t := range pp.tasks {
			if t.pending == nil || pp.inflight[id] || now.Sub(t.wroteAt) < pp.persist {
				continue // a queued report (or a write) of the task goes first; or written lately
			}
			pp.inflight[id] = true
			batch = append(batch, &progressReq{id: id, p: *t.pending, sessRev: t.sessRev})
			t.pending = nil
			pp.pending--
		}
	}
	ready := batch[:0]
	writeAt := time.Now().UTC()
	for _, r := range batch {
		t := pp.tasks[r.id]
		if t == nil || !t.hasStatus || t.sessRev != r.sessRev || t.attempt != r.p.Attempt {
			slow = append(slow, r)
			continue
		}
		switch t.status {
		case wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled:
		default:
			slow = append(slow, r)
			continue
		}
		if r.coalesced() && t.status != wire.StatusInstalling {
			slow = append(slow, r) // a coalesced report never changes the status
			continue
		}
		r.from, r.statusRev, r.progRev, r.events = t.status, t.statusRev, t.progRev, int64(t.events)
		r.stageEvent = t.prog == nil || t.prog.stage != r.p.Stage || t.prog.attempt != r.p.Attempt
		r.complete = r.final && t.status == wire.StatusInstalling
		if r.coalesced() && r.stageEvent {
			slow = append(slow, r) // a coalesced report never changes the stage
			continue
		}
		if !r.coalesced() {
			// A change is stamped when written, as the authoritative path
			// stamps it: the task's previous write has landed (one in
			// flight), so its events keep their order in etcd's keys even
			// when that one went the authoritative way after this one was
			// accepted.
			r.p.UpdatedAt = writeAt
		}
		ready = append(ready, r)
	}
	batch = ready
	pp.queue = append(later, pp.queue...)
	pp.mu.Unlock()
	// Chunks hold distinct tasks: they are committed concurrently (etcd
	// syncs concurrent transactions together).
	type chunkTxn struct {
		reqs []*progressReq
		ops  []*etcdserverpb.RequestOp
		cmps []*etcdserverpb.Compare
	}
	var chunks []chunkTxn
	for len(batch) > 0 {
		var c chunkTxn
		for len(batch) > 0 {
			r := batch[0]
			rops := pp.ops(r)
			if rops == nil { // the history bound needs a read: alone, the authoritative way
				batch = batch[1:]
				slow = append(slow, r)
				continue
			}
			if len(c.reqs) > 0 && (len(c.ops)+len(rops) > maxTxnOps || len(c.cmps)+3 > maxTxnOps) {
				break
			}
			batch = batch[1:]
			c.reqs = append(c.reqs, r)
			c.ops = append(c.ops, rops...)
			c.cmps = append(c.cmps,
				modRevIs(statusKey(r.id), r.statusRev),
				modRevIs(progressKey(r.id), r.progRev),
				modRevIs(sessionKey(r.id), r.sessRev))
		}
		if len(c.reqs) > 0 {
			chunks = append(chunks, c)
		}
	}
	for _, r := range slow {
		wg.Go(func() {
			slowSem <- struct{}{}
			defer func() { <-slowSem }()
			pp.authoritative(ctx, r)
			pp.landed([]*progressReq{r})
		})
	}
	for _, c := range chunks {
		txns <- struct{}{} // backpressure: the writer waits when too many are in flight
		wg.Go(func() {
			defer func() { <-txns }()
			// As clientv3's Txn sends it (WaitForReady), without its copy of every comparison.
			resp, err := pp.s.kvClient().Txn(ctx,
				&etcdserverpb.TxnRequest{Compare: c.cmps, Success: c.ops}, grpc.WaitForReady(true))
			if err == nil && resp.Succeeded {
				pp.committed(c.reqs, resp.Header.Revision)
				pp.landed(c.reqs)
				return
			}
			pp.setFailing(err != nil) // failing: no more answers on acceptance until a write succeeds
			if err != nil {
				pp.s.log.Warn("progress: batch write failed, writing one by one", "reports", len(c.reqs), "error", err)
			}
			// Something changed under a guard: each report the authoritative way.
			for _, r := range c.reqs {
				pp.authoritative(ctx, r)
			}
			pp.landed(c.reqs)
		})
	}
}

// ops are the writes of report r, or nil when its event would need the
// history bound's read. They are etcd's own request messages (built once,
// not cloned by clientv3's Txn): the transaction's events under one key
// (the oldest one's, eventsValue, as packEvents does), after the report.
func (pp *ProgressPath) ops(r *progressReq) []*etcdserverpb.RequestOp {
	p := r.p
	now := p.UpdatedAt
	var evs [3]Event
	events := evs[:0]
	if r.stageEvent {
		events = append(events, Event{At: now, Kind: "stage", Stage: p.Stage, Message: p.Message})
	}
	if r.from != wire.StatusInstalling {
		events = append(events, Event{At: now.Add(-time.Nanosecond), Kind: "status", From: r.from, To: wire.StatusInstalling, Message: "agent reported progress"})
	}
	if r.complete {
		events = append(events, Event{At: now.Add(time.Nanosecond), Kind: "status", From: wire.StatusInstalling, To: wire.StatusCompleted, Message: CompletedReason})
	}
	if len(events) > 0 && r.events+int64(len(events)) > int64(pp.s.maxEvents-1) {
		return nil
	}
	ops := make([]*etcdserverpb.RequestOp, 0, 5)
	ops = append(ops, putOp(progressKey(r.id), progressValue(p)))
	if len(events) > 0 {
		ops = append(ops, putOp(eventKey(r.id, firstAt(events)), eventsValue(events)))
	}
	if r.from != wire.StatusInstalling {
		st := StatusRecord{Status: wire.StatusInstalling, UpdatedAt: now, Attempt: p.Attempt}
		ops = append(ops, putOp(statusKey(r.id), statusValue(st)))
	}
	if r.complete {
		// Transition(completed) in the same transaction, after the report.
		st := StatusRecord{Status: wire.StatusCompleted, Reason: CompletedReason, UpdatedAt: now, Attempt: p.Attempt}
		ops = append(ops,
			putOp(statusKey(r.id), statusValue(st)),
			&etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestDeleteRange{ // an unredeemed boot token dies with the task
				RequestDeleteRange: &etcdserverpb.DeleteRangeRequest{Key: []byte(bootstrapKey(r.id))}}})
	}
	return ops
}

func putOp(key, val string) *etcdserverpb.RequestOp {
	return &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestPut{
		RequestPut: &etcdserverpb.PutRequest{Key: []byte(key), Value: []byte(val)}}}
}

// modRevIs is the guard "key's mod revision is rev" (0: the key is absent).
func modRevIs(key string, rev int64) *etcdserverpb.Compare {
	return &etcdserverpb.Compare{Key: []byte(key), Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_EQUAL,
		TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: rev}}
}

// committed records a committed chunk in the cache and answers its waiters.
func (pp *ProgressPath) committed(chunk []*progressReq, rev int64) {
	pp.mu.Lock()
	pp.failing = false
	for _, r := range chunk {
		t := pp.tasks[r.id]
		if t == nil {
			continue
		}
		if rev > t.progRev { // unless the watch brought a newer one already
			t.prog, t.progRev = markOf(&r.p), rev
		}
		t.wroteAt = time.Now()
		switch {
		case r.complete && rev > t.statusRev:
			t.hasStatus, t.status, t.attempt, t.statusRev = true, wire.StatusCompleted, r.p.Attempt, rev
		case r.from != wire.StatusInstalling && rev > t.statusRev:
			t.hasStatus, t.status, t.attempt, t.statusRev = true, wire.StatusInstalling, r.p.Attempt, rev
		}
	}
	pp.mu.Unlock()
	for _, r := range chunk {
		if r.done != nil {
			p := r.p
			st := StatusRecord{Status: wire.StatusInstalling, Attempt: p.Attempt, UpdatedAt: p.UpdatedAt}
			if r.complete {
				st.Status, st.Reason = wire.StatusCompleted, CompletedReason
			}
			r.done <- progressDone{res: ProgressResult{Task: Task{ID: r.id, Revision: rev, Progress: &p, Status: st}}}
		}
	}
}

// authoritative writes r through ReportAgentProgress (which reads etcd);
// a coalesced or early report it refuses (a newer one is stored, the task
// was cancelled) is dropped: its agent's next report is told. An early
// report (answered 200) that fails for another reason (etcd unavailable,
// a timeout) is retried until it is written or refused, or ctx ends; the
// task's later reports wait for it.
func (pp *ProgressPath) authoritative(ctx context.Context, r *progressReq) {
	// The cache learns the outcome from the watch.
	if prev := r.superseded; prev != nil {
		if _, err := pp.s.ReportAgentProgress(ctx, r.id, *prev); err != nil && !errors.Is(err, context.Canceled) {
			pp.s.log.Debug("progress: superseded report not written", "task", r.id, "seq", prev.Seq, "error", strings.TrimSpace(err.Error()))
		}
	}
	backoff := 50 * time.Millisecond
	for {
		res, err := pp.s.ReportAgentProgress(ctx, r.id, r.p)
		if r.done != nil {
			r.done <- progressDone{res: res, err: err}
			return
		}
		if err == nil {
			if r.early {
				pp.setFailing(false)
			}
			return
		}
		if r.early && !refusal(err) && ctx.Err() == nil {
			pp.setFailing(true)
			pp.s.log.Warn("progress: accepted report not written yet, retrying", "task", r.id, "seq", r.p.Seq, "in", backoff, "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		if !errors.Is(err, context.Canceled) {
			kind := "coalesced"
			if r.early {
				kind = "accepted"
			}
			pp.s.log.Debug("progress: "+kind+" report not written", "task", r.id, "seq", r.p.Seq, "error", strings.TrimSpace(err.Error()))
		}
		return
	}
}

// refusal reports whether err is ReportAgentProgress deciding against the
// report (which retrying cannot change), not failing to reach etcd.
func refusal(err error) bool {
	var te *TransitionError
	return errors.As(err, &te) || errors.Is(err, ErrConflict) || errors.Is(err, ErrRegression) ||
		errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound)
}
