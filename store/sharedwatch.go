package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// One etcd watch per Store (issue 14). Every watcher of this process
// (Watch, WatchStored, the task index, the progress cache) follows one
// etcd watch of "/" instead of opening its own: each etcd watcher cost a
// stage change ~25 µs of CPU, ~4 KB and ~46 allocations (its events
// sent over gRPC, received and decoded), and `serve` had six.
//
// The shared stream (a watchRun) appends whole etcd responses, in order,
// to a bounded ring of entries; each event is decoded at most once
// (watchEntry.change), on the first subscriber's demand, and shared
// read-only. Each subscriber (a watchCursor) reads the ring at its own
// pace from its own position; the stream never waits for a subscriber.
//
//   - Start revision: a subscriber from revision r (0: from now) whose r
//     the stream has not reached yet reads the ring. One that asks for
//     history follows a private etcd watch from r (the catch-up) until
//     that watch has delivered a revision the ring still covers, then
//     continues in the ring: a compacted r gives etcd's compaction error,
//     as its own watch did, even when the ring still holds r.
//   - A subscriber that falls behind by more than the ring holds
//     (watchRingEntries or watchRingBytes) is not waited for: it goes
//     back to a private catch-up watch from the last revision it
//     received, so it still gets every change in order (or etcd's
//     compaction error, then resyncs), as it did with its own watch
//     buffered by etcd. The ring's memory is bounded; a blocked
//     subscriber holds none beyond it.
//   - Restart: a shared watch that fails (no leader, a broken stream) is
//     reopened from the revision after the last one it received, after a
//     backoff, and its subscribers see nothing but the pause. Only a
//     compaction past that revision ends the run: every subscriber gets
//     the rest of the ring, then the compaction (Watch: KindWatchRestart),
//     and the next subscriber starts a new run.
//   - The run starts with its first subscriber and stops with its last
//     (its goroutine and etcd watch end; the ring is freed).
//
// Watches of other prefixes stay separate: the revoked member
// certificates (store/membercerts.go) change a few times a year.

const (
	watchRingEntries = 8192     // entries a run keeps for subscribers behind it
	watchRingBytes   = 16 << 20 // bytes of keys and values it keeps at most
	watchBatch       = 256      // entries a subscriber takes at once (whole revisions)
	watchEntryCost   = 160      // bytes an entry costs beyond its key and value
)

// watchEntry is one event of the stream (ev nil: a progress
// notification: every change up to rev was delivered).
type watchEntry struct {
	ev     *clientv3.Event
	rev    int64
	kind   ChangeKind // changeKindOf, made once
	kindOK bool
	size   int

	once sync.Once
	c    Change // decoded once, on first demand; shared read-only
	ok   bool
}

func newWatchEntry(ev *clientv3.Event) *watchEntry {
	e := &watchEntry{ev: ev, rev: ev.Kv.ModRevision, size: len(ev.Kv.Key) + len(ev.Kv.Value) + watchEntryCost}
	e.kind, e.kindOK = changeKindOf(string(ev.Kv.Key), ev.Type == clientv3.EventTypeDelete)
	return e
}

// change is the entry decoded (once for every subscriber: the pointers
// in it are shared and must not be written).
func (e *watchEntry) change(s *Store) (Change, bool) {
	e.once.Do(func() { e.c, e.ok = s.decodeChange(e.ev) })
	return e.c, e.ok
}

// watchEnd is why a subscriber's stream ended: etcd compacted past it
// (compactRev), or the watch failed (err).
type watchEnd struct {
	compactRev int64
	err        error
}

func (e *watchEnd) Error() string {
	if e.compactRev != 0 {
		return fmt.Sprintf("watch compacted at revision %d", e.compactRev)
	}
	return fmt.Sprintf("watch ended: %v", e.err)
}

func (e *watchEnd) Unwrap() error { return e.err }

// watchHub is a Store's shared watch; its zero value is ready.
type watchHub struct {
	mu       sync.Mutex
	run      *watchRun // nil: no subscriber, or the last run ended
	ringCap  int       // 0: watchRingEntries (tests set less)
	ringMax  int       // 0: watchRingBytes
	runsMade int       // runs started (tests)
	catchUps int       // private catch-up watches opened (tests)
}

// watchRun is one shared etcd watch and its ring; its fields are guarded
// by the hub's mu.
type watchRun struct {
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{} // closed once lo is known, or the run ended
	subs   int
	ring   []*watchEntry
	maxB   int
	start  uint64 // the ring holds entries [start, end)
	end    uint64
	bytes  int
	lo     int64 // every change after lo is in the ring or not received yet
	pos    int64 // every change up to pos was received
	notify chan struct{}
	err    error           // set when the run ended; subscribers get it after the ring
	wctx   context.Context // the current etcd watch's, for RequestProgress
	wstop  context.CancelFunc
}

func (h *watchHub) startLocked(s *Store) *watchRun {
	n, maxB := h.ringCap, h.ringMax
	if n <= 0 {
		n = watchRingEntries
	}
	if maxB <= 0 {
		maxB = watchRingBytes
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &watchRun{ctx: ctx, cancel: cancel, ready: make(chan struct{}), ring: make([]*watchEntry, n), maxB: maxB, notify: make(chan struct{}), wctx: ctx}
	h.run = r
	h.runsMade++
	go h.read(s, r)
	return r
}

// read follows the shared etcd watch until the run's last subscriber
// leaves, the client closes, or etcd compacted past it.
func (h *watchHub) read(s *Store, r *watchRun) {
	backoff := 50 * time.Millisecond
	created := false
	for {
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(r.ctx))
		// No WithPrevKV: nothing reads the previous value.
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if created {
			opts = append(opts, clientv3.WithRev(r.pos+1))
		} else {
			opts = append(opts, clientv3.WithCreatedNotify()) // from now: the created response says where now is
		}
		h.mu.Lock()
		r.wctx, r.wstop = wctx, wcancel
		h.mu.Unlock()
		var end error
		for wr := range s.cli.Watch(wctx, "/", opts...) {
			if wr.CompactRevision != 0 {
				end = &watchEnd{compactRev: wr.CompactRevision}
				break
			}
			if err := wr.Err(); err != nil {
				end = &watchEnd{err: err}
				break
			}
			if wr.Created {
				h.mu.Lock()
				r.lo, r.pos = wr.Header.Revision, wr.Header.Revision
				created = true
				close(r.ready)
				h.mu.Unlock()
				continue
			}
			es := make([]*watchEntry, 0, len(wr.Events)+1)
			for _, ev := range wr.Events {
				es = append(es, newWatchEntry(ev))
			}
			if wr.IsProgressNotify() {
				es = append(es, &watchEntry{rev: wr.Header.Revision})
			}
			h.append(r, es)
			backoff = 50 * time.Millisecond
		}
		wcancel()
		if r.ctx.Err() != nil {
			h.end(r, &watchEnd{err: r.ctx.Err()})
			return
		}
		if end == nil {
			end = &watchEnd{err: errors.New("watch closed")}
		}
		var we *watchEnd
		if errors.As(end, &we) && we.compactRev != 0 || !created || s.cli.Ctx().Err() != nil {
			s.log.Warn("store: shared watch ended, its watchers must resync", "error", end)
			h.end(r, end)
			return
		}
		s.log.Warn("store: shared watch restarting", "error", end, "from_revision", r.pos+1, "after", backoff)
		select {
		case <-r.ctx.Done():
			h.end(r, &watchEnd{err: r.ctx.Err()})
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (h *watchHub) append(r *watchRun, es []*watchEntry) {
	if len(es) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := uint64(len(r.ring))
	for _, e := range es {
		for r.end > r.start && (r.end-r.start == n || r.bytes+e.size > r.maxB) {
			old := r.ring[r.start%n]
			r.lo = max(r.lo, old.rev)
			r.bytes -= old.size
			r.ring[r.start%n] = nil
			r.start++
		}
		r.ring[r.end%n] = e
		r.end++
		r.bytes += e.size
		r.pos = max(r.pos, e.rev)
	}
	close(r.notify)
	r.notify = make(chan struct{})
}

func (h *watchHub) end(r *watchRun, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.err != nil {
		return
	}
	r.err = err
	close(r.notify)
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
	if h.run == r {
		h.run = nil
	}
}

// seekLocked is the position of the first entry of the ring after
// revision after (the ring's revisions do not decrease).
func (r *watchRun) seekLocked(after int64) uint64 {
	n := uint64(len(r.ring))
	lo, hi := r.start, r.end
	for lo < hi {
		m := lo + (hi-lo)/2
		if r.ring[m%n].rev > after {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// watchCursor is one subscriber of the shared watch; one goroutine
// calls next, any may call requestProgress.
type watchCursor struct {
	s    *Store
	h    *watchHub
	r    *watchRun
	from int64  // entries before it are skipped
	seq  uint64 // the next entry of the ring (unless catching up)
	last int64  // every change up to here was delivered
	err  error

	priv    clientv3.WatchChan // catching up on a private watch (nil: reading the ring)
	pcancel context.CancelFunc
	buf     []*watchEntry
	turn    bool // alternates a waiting live change with the ring's entries
}

// subscribe follows the store's changes after fromRev-1 (fromRev 0: from
// now). The caller calls close when done.
func (h *watchHub) subscribe(ctx context.Context, s *Store, fromRev int64) *watchCursor {
	h.mu.Lock()
	r := h.run
	if r == nil {
		r = h.startLocked(s)
	}
	r.subs++
	h.mu.Unlock()
	c := &watchCursor{s: s, h: h, r: r, from: fromRev}
	select {
	case <-r.ready:
	case <-ctx.Done():
		c.err = ctx.Err()
		return c
	}
	h.mu.Lock()
	catchUp := false
	switch {
	case r.err != nil:
		c.seq, c.last = r.end, r.pos // the ring, then the error
	case fromRev <= 0:
		c.seq, c.last = r.end, r.pos
	case fromRev-1 >= r.pos: // nothing before what the run has yet to receive
		c.seq, c.last = r.seekLocked(fromRev-1), fromRev-1
	default:
		// History: from etcd, even when the ring still holds it, so that
		// a compacted revision gives etcd's compaction error (and the
		// consumer's resync) exactly as its own watch did.
		c.last, catchUp = fromRev-1, true
	}
	h.mu.Unlock()
	if catchUp {
		c.startPrivate(ctx)
	}
	return c
}

func (c *watchCursor) startPrivate(ctx context.Context) {
	pctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	c.pcancel = cancel
	c.h.mu.Lock()
	c.h.catchUps++
	c.h.mu.Unlock()
	c.priv = c.s.cli.Watch(pctx, "/", clientv3.WithPrefix(), clientv3.WithRev(c.last+1))
}

func (c *watchCursor) stopPrivate() {
	if c.pcancel != nil {
		c.pcancel()
	}
	c.priv, c.pcancel = nil, nil
}

// tryJoin moves a catching-up cursor to the ring once the ring holds
// every change after what it delivered.
func (c *watchCursor) tryJoin() {
	c.h.mu.Lock()
	r := c.r
	ok := r.err == nil && c.last >= r.lo
	if ok {
		c.seq = r.seekLocked(c.last)
		// The private watch may be ahead of the shared one: the ring
		// entries it has yet to append up to c.last were delivered
		// already (a full-suite run saw one transaction twice).
		c.from = max(c.from, c.last+1)
	}
	c.h.mu.Unlock()
	if ok {
		c.stopPrivate()
	}
}

// close leaves the shared watch; the last subscriber stops it.
func (c *watchCursor) close() {
	c.stopPrivate()
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	if c.r == nil {
		return
	}
	r := c.r
	c.r = nil
	r.subs--
	if r.subs == 0 {
		r.cancel()
		if c.h.run == r {
			c.h.run = nil
		}
	}
}

// requestProgress asks etcd for a progress notification on the watch
// stream (best effort): it arrives as an entry with a nil ev.
func (c *watchCursor) requestProgress(context.Context) error {
	c.h.mu.Lock()
	if c.r == nil {
		c.h.mu.Unlock()
		return errors.New("request watch progress: the watch is closed")
	}
	w := c.r.wctx
	c.h.mu.Unlock()
	if err := c.s.cli.RequestProgress(w); err != nil {
		return fmt.Errorf("request watch progress: %w", err)
	}
	return nil
}

// next returns the next entries (whole revisions, in order; valid until
// the next call), or a live change when live has one first, or the
// error that ended the stream (ctx's, or a *watchEnd).
func (c *watchCursor) next(ctx context.Context, live <-chan Change) ([]*watchEntry, *Change, error) {
	for {
		if c.err != nil {
			return nil, nil, c.err
		}
		if c.priv != nil {
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case l := <-live:
				return nil, &l, nil
			case wr, ok := <-c.priv:
				switch {
				case ctx.Err() != nil:
					return nil, nil, ctx.Err()
				case !ok:
					c.err = &watchEnd{err: errors.New("watch closed")}
				case wr.CompactRevision != 0 || wr.Err() != nil:
					c.err = &watchEnd{compactRev: wr.CompactRevision, err: wr.Err()}
				}
				if c.err != nil {
					c.stopPrivate()
					continue
				}
				c.buf = c.buf[:0]
				for _, ev := range wr.Events {
					e := newWatchEntry(ev)
					c.buf = append(c.buf, e)
					c.last = max(c.last, e.rev)
				}
				if wr.IsProgressNotify() {
					c.buf = append(c.buf, &watchEntry{rev: wr.Header.Revision})
					c.last = max(c.last, wr.Header.Revision)
				}
				c.tryJoin()
				if len(c.buf) > 0 {
					return c.buf, nil, nil
				}
			}
			continue
		}
		if c.turn = !c.turn; c.turn && live != nil { // a live change waiting goes first every other time, as a select would
			select {
			case l := <-live:
				return nil, &l, nil
			default:
			}
		}
		c.h.mu.Lock()
		r := c.r
		if c.seq < r.start { // the ring moved past it: catch up on its own
			c.h.mu.Unlock()
			c.startPrivate(ctx)
			continue
		}
		if c.seq == r.end {
			if r.err != nil {
				c.err = r.err
				c.h.mu.Unlock()
				continue
			}
			notify := r.notify
			c.h.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case l := <-live:
				return nil, &l, nil
			case <-notify:
			}
			continue
		}
		n := uint64(len(r.ring))
		c.buf = c.buf[:0]
		var lastRev int64
		for ; c.seq < r.end; c.seq++ {
			e := r.ring[c.seq%n]
			if len(c.buf) >= watchBatch && e.rev != lastRev {
				break // whole revisions only
			}
			lastRev = e.rev
			if e.rev >= c.from {
				c.buf = append(c.buf, e)
			}
		}
		c.h.mu.Unlock()
		c.last = max(c.last, lastRev)
		if len(c.buf) > 0 {
			return c.buf, nil, nil
		}
	}
}
