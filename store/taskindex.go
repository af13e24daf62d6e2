package store

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/lpmos/lpmos/agent/wire"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The task summaries (issue 14: a list that never reads events or
// hardware). One watch of /tasks/ keeps, per task, what a list shows:
// spec, status, progress, target disk, BMC, power and a hardware summary
// (no disks, no NICs, no partitions, no events; those are read for one
// task on demand: GetTask, Events). The keys of DESIGN.md stay the only
// source of truth: the index is rebuilt from them and follows them.
//
// A list is read-your-writes: it first reads etcd's current revision
// (one small linearizable read) and answers once the index has seen it,
// asking the watch for a progress notification when /tasks/ did not
// change since; when the index cannot catch up in time it falls back to
// the full read (ListTasks).

// indexCatchUp bounds how long a list waits for the index to reach the
// revision it read.
const indexCatchUp = 2 * time.Second

// summariesWait bounds how long TaskSummaries waits for the index (its
// first load of a large store included).
const summariesWait = time.Minute

type taskIndex struct {
	mu      sync.Mutex
	caught  *sync.Cond
	tasks   map[string]*indexed
	rev     int64 // every change up to here is applied
	ready   bool
	started bool
	notify  func(context.Context) error // asks the watch for its revision
}

type indexed struct {
	t   Task
	has int    // 1: spec, 2: status
	ver uint64 // changes applied
	js  []byte // t's JSON at ver; nil: not made yet
	// eventKeys counts the task's event keys (the dropped-events record
	// aside): more than one, and the fold has work (store/fold.go).
	eventKeys int32
}

// intern returns s as the one copy of its value the process keeps
// (unique.Make): the index holds the values many tasks share (region, OS,
// status, reason, stage, progress message, CPU model, DMI vendor...) once
// instead of once per task; the live view's copies share them too (~2 MB
// with 10,000 tasks, issue 14's RSS target).
func intern(s string) string {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}

// internSpec interns the spec's fields many tasks share.
func internSpec(sp *Spec) {
	sp.RegionID, sp.OSType, sp.OSVersion = intern(sp.RegionID), intern(sp.OSType), intern(sp.OSVersion)
}

// internHardware interns a hardware summary's fields many machines share.
func internHardware(hw *wire.Hardware) {
	if hw == nil {
		return
	}
	hw.CPU.Model, hw.BootMode, hw.Kernel = intern(hw.CPU.Model), intern(hw.BootMode), intern(hw.Kernel)
	d := &hw.DMI
	d.Vendor, d.Product, d.BIOSVendor, d.BIOSVersion, d.BIOSDate = intern(d.Vendor), intern(d.Product), intern(d.BIOSVendor), intern(d.BIOSVersion), intern(d.BIOSDate)
}

// summaryHardware is what a list shows of a hardware report.
func summaryHardware(hw *wire.Hardware) *wire.Hardware {
	if hw == nil {
		return nil
	}
	return &wire.Hardware{CPU: hw.CPU, Memory: hw.Memory, DMI: hw.DMI, BootMode: hw.BootMode, Hostname: hw.Hostname, Kernel: hw.Kernel, CollectedAt: hw.CollectedAt}
}

// StartTaskIndex loads the task summaries now rather than at the first
// list (a server calls it when it starts serving); idempotent.
func (s *Store) StartTaskIndex() { s.startIndex() }

// startIndex runs the index until the store closes (first list only).
func (s *Store) startIndex() *taskIndex {
	ix := &s.index
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.started {
		return ix
	}
	ix.started = true
	ix.caught = sync.NewCond(&ix.mu)
	ctx, cancel := context.WithCancel(context.Background())
	s.indexStop = cancel
	go s.runIndex(ctx)
	return ix
}

func (s *Store) runIndex(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.followIndex(ctx)
		ix := &s.index
		ix.mu.Lock()
		ix.ready = false
		ix.caught.Broadcast()
		ix.mu.Unlock()
		if ctx.Err() != nil || s.closing.Load() {
			return
		}
		s.log.Warn("task index: reloading", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// indexChunk is how many keys one read of the index's load returns: the
// load reads /tasks/ (every event included) in pieces at one revision
// instead of one response holding all of it, which with 10,000 installed
// tasks was ~100 MB of protobuf on each side of the client and left the
// process's heap (and RSS) at that peak.
const indexChunk = 4096

// rangeChunked reads every key under prefix at one revision (the first
// read's) in chunks of chunk keys, handing each chunk to fn, and returns
// the revision.
func (s *Store) rangeChunked(ctx context.Context, prefix string, chunk int64, fn func([]*mvccpb.KeyValue)) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(chunk)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		fn(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (s *Store) followIndex(ctx context.Context) error {
	tasks := make(map[string]*indexed)
	rev, err := s.rangeChunked(ctx, prefixTasks, indexChunk, func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			applyKV(tasks, kv, false, true)
		}
	})
	if err != nil {
		return fmt.Errorf("load tasks: %w", err)
	}
	ix := &s.index
	// The store's shared watch (store/sharedwatch.go), of every key: a
	// change of another prefix moves the index's revision too (every
	// change before it was delivered).
	cur := s.watches.subscribe(ctx, s, rev+1)
	defer cur.close()
	ix.mu.Lock()
	ix.tasks = tasks
	ix.rev, ix.ready = rev, true
	ix.notify = cur.requestProgress
	ix.caught.Broadcast()
	ix.mu.Unlock()
	for {
		es, _, err := cur.next(ctx, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch ended: %w", err)
		}
		ix.mu.Lock()
		for _, e := range es {
			if e.ev != nil && strings.HasPrefix(string(e.ev.Kv.Key), prefixTasks) {
				applyKV(ix.tasks, e.ev.Kv, e.ev.Type == clientv3.EventTypeDelete, e.ev.IsCreate())
			}
			ix.rev = max(ix.rev, e.rev)
		}
		ix.caught.Broadcast()
		ix.mu.Unlock()
	}
}

// TaskSummaries returns every task's summary (what ListSummaries returns:
// no events, partitions, disks or NICs), newest first, and the revision
// they are current at: a watch from revision+1 misses nothing. It waits,
// until ctx ends, for the index to load and catch up with etcd's current
// revision (no fallback to the full read), at most summariesWait: past it
// the caller gets an error to report and retry. The live view and the task
// metrics load from it at start instead of each reading every key of every
// task, events included.
func (s *Store) TaskSummaries(ctx context.Context) ([]Task, int64, error) {
	ix := s.startIndex()
	deadline := time.Now().Add(summariesWait)
	for {
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("task summaries: the task index did not catch up with etcd within %s", summariesWait)
		}
		cur, err := s.cli.Get(ctx, keyAdminToken, clientv3.WithCountOnly())
		if err != nil {
			return nil, 0, fmt.Errorf("task summaries: read the revision: %w", err)
		}
		if ix.waitFor(ctx, cur.Header.Revision) {
			ix.mu.Lock()
			if ix.ready && ix.rev >= cur.Header.Revision {
				break // still locked
			}
			ix.mu.Unlock()
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("task summaries: %w", ctx.Err())
		}
	}
	out := make([]Task, 0, len(ix.tasks))
	for _, e := range ix.tasks {
		if e.has == 3 {
			out = append(out, e.t)
		}
	}
	rev := ix.rev
	ix.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return newer(&out[i], &out[j]) })
	return out, rev, nil
}

// applyKV folds one key of a task (or its deletion; created: a key that
// did not exist before) into tasks.
func applyKV(tasks map[string]*indexed, kv *mvccpb.KeyValue, del, created bool) {
	id, kind, ok := taskKeyKind(string(kv.Key))
	if !ok || kind == "session" || kind == "bootstrap" || kind == "partitions" || kind == "power-lifecycle" {
		return
	}
	e := tasks[id]
	if e == nil {
		if del {
			return
		}
		e = &indexed{t: Task{ID: id}}
		tasks[id] = e
	}
	if kind == "events" { // counted, not shown: the summary does not change
		switch {
		case string(kv.Key) == droppedKey(id):
		case del:
			e.eventKeys--
		case created:
			e.eventKeys++
		}
		return
	}
	if del {
		e.ver++
		e.js = nil
		switch kind {
		case "spec":
			delete(tasks, id)
		case "status":
			e.has &^= 2
		case "hardware":
			e.t.Hardware = nil
		case "progress":
			e.t.Progress = nil
		case "target-disk":
			e.t.TargetDisk = nil
		case "bmc":
			e.t.BMC = nil
		case "power":
			e.t.Power = nil
		}
		return
	}
	e.ver++
	e.js = nil
	one := Task{ID: id}
	has, err := decodeTaskKey(&one, kind, kv)
	if err != nil {
		return // assembleTasks logs it on the full read
	}
	e.has |= has
	switch kind {
	case "spec":
		e.t.Spec = one.Spec
		internSpec(&e.t.Spec)
	case "status":
		e.t.Status, e.t.Revision = one.Status, one.Revision
		e.t.Status.Status, e.t.Status.Reason = Status(intern(string(one.Status.Status))), intern(one.Status.Reason)
	case "hardware":
		e.t.Hardware = summaryHardware(one.Hardware)
		internHardware(e.t.Hardware)
	case "progress":
		e.t.Progress = one.Progress
		if p := e.t.Progress; p != nil {
			p.Stage, p.Message = intern(p.Stage), intern(p.Message)
			if p.TaskID == e.t.ID {
				p.TaskID = e.t.ID // one copy of the ID per task
			}
		}
	case "target-disk":
		e.t.TargetDisk = one.TargetDisk
		if d := e.t.TargetDisk; d != nil {
			d.ChosenBy, d.Model, d.Vendor = intern(d.ChosenBy), intern(d.Model), intern(d.Vendor)
		}
	case "bmc":
		e.t.BMC = one.BMC
	case "power":
		e.t.Power = one.Power
	}
}

// Cursor is a position in the task list (newest first: created_at
// descending, then id), which a task never changes: a walk from page to
// page sees each task that exists throughout exactly once, whatever is
// created or deleted meanwhile.
type Cursor struct {
	Created time.Time
	ID      string
}

// before reports whether t sorts after the cursor.
func (c Cursor) before(t *Task) bool {
	if !t.Spec.CreatedAt.Equal(c.Created) {
		return t.Spec.CreatedAt.Before(c.Created)
	}
	return t.ID > c.ID
}

// ListSummaries returns up to limit (<= 0: all) task summaries matching
// f after cursor after (nil: from the newest), newest first, the revision
// they are current at, and the cursor of the next page (nil at the end).
// Summaries are tasks without events, partitions, disks or NICs (the
// hardware keeps CPU, memory, DMI, boot mode, hostname and kernel): GetTask and
// Events read the rest for one task.
func (s *Store) ListSummaries(ctx context.Context, f Filter, limit int, after *Cursor) ([]Task, int64, *Cursor, error) {
	sel, rev, next, all, err := s.selectSummaries(ctx, f, limit, after)
	if err != nil || sel == nil {
		return all, rev, next, err
	}
	out := make([]Task, len(sel))
	for i, e := range sel {
		out[i] = e.t
	}
	s.index.mu.Unlock()
	return out, rev, next, nil
}

// ListSummariesJSON is ListSummaries with each task as its JSON, kept by
// the index from one change of the task to the next (a list of 10,000
// tasks marshals only those that changed since the last list).
func (s *Store) ListSummariesJSON(ctx context.Context, f Filter, limit int, after *Cursor) ([]json.RawMessage, int64, *Cursor, error) {
	var out []json.RawMessage
	_, rev, next, err := s.EachSummaryJSON(ctx, f, limit, after, func(js json.RawMessage) error {
		out = append(out, js)
		return nil
	})
	if err != nil {
		return nil, 0, nil, err
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return out, rev, next, nil
}

// summaryChunk is how many tasks of a list one marshalling goroutine
// takes at a time.
const summaryChunk = 128

// EachSummaryJSON selects what ListSummaries does and hands fn each task's
// JSON in the list's order, as the list is made: the JSON the index keeps
// is handed as it is; the tasks changed since the last list (after a round
// of progress: all of them) are marshalled ahead of fn on up to GOMAXPROCS
// goroutines, chunk by chunk, and kept for the next list. fn must not
// keep or change js past its call. It returns the number of tasks, the
// revision they are current at and the next page's cursor; an error of fn
// ends the walk and is returned as it is. Nothing is handed to fn when the
// selection fails (read-your-writes: the revision read, the wait for the
// index).
func (s *Store) EachSummaryJSON(ctx context.Context, f Filter, limit int, after *Cursor, fn func(js json.RawMessage) error) (int, int64, *Cursor, error) {
	sel, rev, next, all, err := s.selectSummaries(ctx, f, limit, after)
	if err != nil {
		return 0, 0, nil, err
	}
	if sel == nil { // the full read answered
		for i := range all {
			if err := fn(mustMarshal(all[i])); err != nil {
				return 0, 0, nil, err
			}
		}
		return len(all), rev, next, nil
	}
	ix := &s.index
	out := make([]json.RawMessage, len(sel))
	type todo struct {
		i   int
		e   *indexed
		ver uint64
		t   Task
	}
	// Sized first: a Task is hundreds of bytes, and growing the slice
	// copied 10,000 of them again and again (a third of a list's CPU when
	// every task changed).
	nb := 0
	for _, e := range sel {
		if e.js == nil {
			nb++
		}
	}
	build := make([]todo, 0, nb)
	for i, e := range sel {
		if e.js != nil {
			out[i] = e.js
		} else {
			build = append(build, todo{i, e, e.ver, e.t})
		}
	}
	ix.mu.Unlock()

	// Chunk c (out[c*summaryChunk:...]) is ready once done[c] is closed;
	// the workers take the chunks that have tasks to marshal in order.
	nchunks := (len(out) + summaryChunk - 1) / summaryChunk
	done := make([]chan struct{}, nchunks)
	var work [][]todo // the chunks to marshal, in order
	for j := 0; j < len(build); {
		c := build[j].i / summaryChunk
		k := j
		for k < len(build) && build[k].i/summaryChunk == c {
			k++
		}
		done[c] = make(chan struct{})
		work = append(work, build[j:k])
		j = k
	}
	var (
		wg    sync.WaitGroup
		taken atomic.Int64
		stop  atomic.Bool
	)
	for range min(len(work), runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for {
				w := int(taken.Add(1)) - 1
				if w >= len(work) || stop.Load() {
					return
				}
				for _, m := range work[w] {
					out[m.i] = mustMarshal(m.t)
				}
				close(done[work[w][0].i/summaryChunk])
			}
		})
	}
	var ferr error
	for c := 0; c < nchunks && ferr == nil; c++ {
		if done[c] != nil {
			<-done[c]
		}
		for _, js := range out[c*summaryChunk : min(len(out), (c+1)*summaryChunk)] {
			if ferr = fn(js); ferr != nil {
				break
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if ferr != nil {
		return 0, 0, nil, ferr
	}
	if len(build) > 0 {
		ix.mu.Lock()
		for _, m := range build {
			if m.e.ver == m.ver {
				m.e.js = out[m.i]
			}
		}
		ix.mu.Unlock()
	}
	return len(out), rev, next, nil
}

// selectSummaries picks the page from the index and returns it with the
// index locked (the caller unlocks), or, when the index cannot answer,
// sel nil and all the page of the full read.
func (s *Store) selectSummaries(ctx context.Context, f Filter, limit int, after *Cursor) (sel []*indexed, rev int64, next *Cursor, all []Task, err error) {
	ix := s.startIndex()
	cur, err := s.cli.Get(ctx, keyAdminToken, clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, nil, nil, fmt.Errorf("list tasks: read the revision: %w", err)
	}
	if !ix.waitFor(ctx, cur.Header.Revision) {
		if ctx.Err() != nil {
			return nil, 0, nil, nil, fmt.Errorf("list tasks: %w", ctx.Err())
		}
		// The index is loading or behind: the full read answers.
		full, rev, err := s.ListTasks(ctx, f)
		if err != nil {
			return nil, 0, nil, nil, err
		}
		for i := range full {
			full[i].Hardware, full[i].Partitions = summaryHardware(full[i].Hardware), nil
		}
		out, next := page(full, limit, after)
		if out == nil {
			out = []Task{}
		}
		return nil, rev, next, out, nil
	}
	ix.mu.Lock()
	match := make([]*indexed, 0, len(ix.tasks))
	for _, e := range ix.tasks {
		if e.has == 3 && f.match(e.t) && (after == nil || after.before(&e.t)) {
			match = append(match, e)
		}
	}
	sort.Slice(match, func(i, j int) bool { return newer(&match[i].t, &match[j].t) })
	n := len(match)
	if limit > 0 {
		n = min(n, limit)
	}
	if n < len(match) && n > 0 {
		last := &match[n-1].t
		next = &Cursor{Created: last.Spec.CreatedAt, ID: last.ID}
	}
	return match[:n:n], ix.rev, next, nil, nil
}

// waitFor waits until the index has applied revision rev, asking the
// watch for a progress notification (it moves the index's revision when
// /tasks/ itself did not change); false if it cannot within indexCatchUp.
func (ix *taskIndex) waitFor(ctx context.Context, rev int64) bool {
	deadline := time.Now().Add(indexCatchUp)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	asked := time.Time{}
	for !ix.ready || ix.rev < rev {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		if ix.ready && time.Since(asked) > 100*time.Millisecond {
			asked = time.Now()
			notify := ix.notify
			ix.mu.Unlock()
			_ = notify(ctx) // best effort: the deadline bounds the wait
			ix.mu.Lock()
			continue
		}
		// Wake at least every 50 ms to check the deadline and ask again.
		t := time.AfterFunc(50*time.Millisecond, func() {
			ix.mu.Lock()
			ix.caught.Broadcast()
			ix.mu.Unlock()
		})
		ix.caught.Wait()
		t.Stop()
	}
	return true
}

// newer is the list's order: created_at descending, then id.
func newer(a, b *Task) bool {
	if !a.Spec.CreatedAt.Equal(b.Spec.CreatedAt) {
		return a.Spec.CreatedAt.After(b.Spec.CreatedAt)
	}
	return a.ID < b.ID
}

// page cuts a page of up to limit tasks after cursor after out of all.
func page(all []Task, limit int, after *Cursor) ([]Task, *Cursor) {
	ps := make([]*Task, 0, len(all))
	for i := range all {
		if after == nil || after.before(&all[i]) {
			ps = append(ps, &all[i])
		}
	}
	sort.Slice(ps, func(i, j int) bool { return newer(ps[i], ps[j]) })
	n := len(ps)
	if limit > 0 {
		n = min(n, limit)
	}
	out := make([]Task, n)
	for i := range out {
		out[i] = *ps[i]
	}
	var next *Cursor
	if n < len(ps) && n > 0 {
		next = &Cursor{Created: out[n-1].Spec.CreatedAt, ID: out[n-1].ID}
	}
	return out, next
}
