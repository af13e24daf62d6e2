package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/lpmos/lpmos/store"
)

// SubFilter selects what one client receives (/ws?status=..&region=..&task=..);
// empty fields match everything. Machines and regions go to every client.
type SubFilter struct {
	Status []store.Status
	Region string
	Tasks  []string
}

func (f SubFilter) empty() bool { return len(f.Status) == 0 && f.Region == "" && len(f.Tasks) == 0 }

// matchTask reports whether a task of region in status st, id id, is in
// the client's view.
func (f SubFilter) match(id, region string, st store.Status) bool {
	return (len(f.Status) == 0 || slices.Contains(f.Status, st)) &&
		(f.Region == "" || f.Region == region) &&
		(len(f.Tasks) == 0 || slices.Contains(f.Tasks, id))
}

// outQueue is one client's pending messages: in order, except that an
// unsent message carrying a task's latest state of one kind (progress,
// power, hardware, target disk, BMC: see coalesceKind) is replaced by the
// task's newer one of that kind (latest wins) as long as no other message
// of that task came after it. A client slower than the event rate thus
// receives fewer, fresher state messages and every other message (status
// changes, events, task, machine and region messages) in order. It is
// resynced (the queue replaced by a fresh snapshot) only when its backlog
// of other messages is past QueueLen messages and larger than a snapshot:
// then the snapshot is the cheaper way to bring it up to date.
type outQueue struct {
	mu     sync.Mutex
	items  []queued
	head   int
	latest map[stateKey]int // (task, kind) -> index in items of its unsent state message
	others int              // unsent messages that are not state messages
	bytes  int              // their size
	signal chan struct{}    // cap 1: something was queued (or, for /ws, handed off)

	// A /ws connection's queue is delivered by the writers of
	// ui/ws_writer.go: out is set, and busy while one of them (a pool
	// worker or the connection's goroutine) owns the queue. handoff: the
	// connection's goroutine owns it and must first write carry.
	out     *wsOut
	busy    bool
	handoff bool
	carry   []byte
}

// stateKey names one kind of state of one task.
type stateKey struct {
	task string
	kind uint8
}

// Kinds of state messages that coalesce (0: none, the message is kept).
const (
	coalesceNone uint8 = iota
	coalesceProgress
	coalescePower
	coalesceHardware
	coalesceTargetDisk
	coalesceBMC
	coalesceKinds
)

type queued struct {
	task  string
	b     []byte
	frame []byte // b as a WebSocket frame (/ws queues; nil: encode when sent)
	kind  uint8
}

func newOutQueue() *outQueue {
	return &outQueue{latest: map[stateKey]int{}, signal: make(chan struct{}, 1)}
}

func (q *outQueue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// push queues b, a message about task (or none) of state kind (0: not
// coalesced). It reports false (nothing queued) when the client's backlog
// is past maxMsgs other messages and maxBytes and it must be resynced.
func (q *outQueue) push(task string, b []byte, kind uint8, maxMsgs, maxBytes int) bool {
	return q.pushFrame(task, b, nil, kind, maxMsgs, maxBytes)
}

// pushFrame is push with b's prepared WebSocket frame (nil: none).
func (q *outQueue) pushFrame(task string, b, frame []byte, kind uint8, maxMsgs, maxBytes int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if kind != coalesceNone && task != "" {
		k := stateKey{task, kind}
		if i, ok := q.latest[k]; ok {
			q.items[i].b, q.items[i].frame = b, frame
			return true
		}
		q.latest[k] = len(q.items)
	} else {
		if q.others >= maxMsgs && q.bytes+len(b) > maxBytes {
			return false
		}
		q.others++
		q.bytes += len(b)
		if task != "" && len(q.latest) > 0 {
			for kind := coalesceProgress; kind < coalesceKinds; kind++ {
				delete(q.latest, stateKey{task, kind}) // a later state message goes after this one
			}
		}
	}
	q.items = append(q.items, queued{task: task, b: b, frame: frame, kind: kind})
	q.kickLocked()
	return true
}

// kickLocked gets something queued delivered: it wakes the pump, or hands
// an idle /ws connection to a pool worker.
func (q *outQueue) kickLocked() {
	if q.out == nil {
		q.wake()
		return
	}
	if q.busy {
		return
	}
	q.busy = true
	if q.out.conn.rc == nil {
		// No non-blocking writes (TLS): the connection's goroutine
		// writes, with no worker in between.
		q.handoff, q.carry = true, nil
		q.wake()
		return
	}
	q.out.pool.add(q.out)
}

// reset replaces everything queued with b (a snapshot).
func (q *outQueue) reset(b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	clear(q.items)
	q.items, q.head = q.items[:0], 0
	clear(q.latest)
	q.items = append(q.items, queued{b: b})
	q.others, q.bytes = 1, len(b)
	if q.out != nil && !q.busy {
		// A snapshot is large: the connection's goroutine writes it.
		q.busy, q.handoff, q.carry = true, true, nil
	}
	q.wake()
}

// next is pop for the writer that owns a /ws queue: when the queue is
// empty it gives the ownership up (in the same critical section, so a
// push either sees the queue owned or hands it to a worker).
func (q *outQueue) next() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, ok := q.popItemLocked()
	if !ok {
		q.busy = false
	}
	return it, ok
}

// nextBatch is next for several messages: it appends to dst the oldest
// queued messages, up to maxItems and, after the first, up to maxBytes;
// none when the queue is empty (and then gives the ownership up).
func (q *outQueue) nextBatch(dst []queued, maxItems, maxBytes int) []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	size := 0
	for len(dst) < maxItems && q.head < len(q.items) {
		if len(dst) > 0 && size+len(q.items[q.head].b) > maxBytes {
			break
		}
		it, _ := q.popItemLocked()
		size += len(it.b)
		dst = append(dst, it)
	}
	if len(dst) == 0 {
		q.busy = false
	}
	return dst
}

// handOff passes the ownership of a /ws queue from a pool worker to the
// connection's goroutine, which first writes carry (and any pending rest).
func (q *outQueue) handOff(carry []byte) {
	q.mu.Lock()
	q.handoff, q.carry = true, carry
	q.mu.Unlock()
	q.wake()
}

// takeHandoff reports whether the connection's goroutine owns its queue
// now, and what it must write first.
func (q *outQueue) takeHandoff() ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.handoff {
		return nil, false
	}
	carry := q.carry
	q.handoff, q.carry = false, nil
	return carry, true
}

// pop takes the oldest message, if any.
func (q *outQueue) pop() ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popLocked()
}

func (q *outQueue) popLocked() ([]byte, bool) {
	it, ok := q.popItemLocked()
	return it.b, ok
}

func (q *outQueue) popItemLocked() (queued, bool) {
	if q.head == len(q.items) {
		return queued{}, false
	}
	it := q.items[q.head]
	q.items[q.head] = queued{}
	if it.kind != coalesceNone && it.task != "" {
		k := stateKey{it.task, it.kind}
		if i, ok := q.latest[k]; ok && i == q.head {
			delete(q.latest, k)
		}
	} else {
		q.others = max(0, q.others-1)
		q.bytes = max(0, q.bytes-len(it.b))
	}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head > len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		for k, i := range q.latest {
			q.latest[k] = i - q.head
		}
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return it, true
}

// pump feeds the subscription's channel from its queue until it ends.
func (s *Subscription) pump() {
	defer close(s.pumped)
	for {
		b, ok := s.q.pop()
		if !ok {
			select {
			case <-s.q.signal:
				continue
			case <-s.done:
				return
			}
		}
		select {
		case s.c <- b:
		case <-s.done:
			return
		}
	}
}

// SubscribeFilter is Subscribe for the tasks f selects: the snapshot
// holds them, and later messages are about them (a task entering the
// view arrives whole, as a "task" message; one leaving it gets its last
// status message).
func (h *Hub) SubscribeFilter(ctx context.Context, f SubFilter) (*Subscription, error) {
	return h.subscribe(ctx, f, nil)
}

// subscribe is SubscribeFilter; with out (a /ws connection) nothing feeds
// C: the writers of ui/ws_writer.go deliver the queue to the connection.
func (h *Hub) subscribe(ctx context.Context, f SubFilter, out *wsConn) (*Subscription, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for live updates: %w", ctx.Err())
	}
	c := make(chan []byte)
	s := &Subscription{C: c, c: c, done: make(chan struct{}), pumped: make(chan struct{}), q: newOutQueue(), filter: f}
	if out != nil {
		s.q.out = &wsOut{conn: out, pool: &h.ws, q: s.q}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s.q.reset(h.snapshotForLocked(s, false))
	h.clients[s] = struct{}{}
	if out == nil {
		go s.pump()
	} else {
		close(s.pumped)
	}
	return s, nil
}

// snapshotForLocked is the encoded snapshot of s's view.
func (h *Hub) snapshotForLocked(s *Subscription, resync bool) []byte {
	if s.filter.empty() && !resync {
		return h.snapshotLocked()
	}
	snap := h.buildSnapshotLocked(func(t *hubTask) bool {
		return s.filter.match(t.ID, t.Spec.RegionID, t.Status.Status)
	})
	snap.Resync = resync
	b, err := json.Marshal(snap)
	if err != nil { // our own types always marshal
		h.log.Error("live updates: encode snapshot", "error", err)
		return []byte(`{"type":"snapshot","tasks":[],"machines":[],"regions":[]}`)
	}
	h.snapLen = max(h.snapLen, len(b))
	return b
}

// sendLocked queues b for s; a client whose backlog is past QueueLen other
// messages and larger than a snapshot (or QueueBytes) is resynced from a
// snapshot instead of dropped.
func (h *Hub) sendLocked(s *Subscription, task string, b []byte, kind uint8) {
	if s.closed {
		return
	}
	var frame []byte
	if s.q.out != nil {
		frame = h.frames.frameOf(b) // encoded once per message
	}
	if s.q.pushFrame(task, b, frame, kind, h.cfg.QueueLen, max(h.cfg.QueueBytes, h.snapLen)) {
		return
	}
	h.resyncs++
	s.q.reset(h.snapshotForLocked(s, true))
}
