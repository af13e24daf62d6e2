package store

import (
	"sync"

	"github.com/lpmos/lpmos/agent/wire"
)

// Live progress (issue 14). The progress path writes a within-stage
// report to etcd at most once per persist interval (etcd keeps every
// version until a compaction), but publishes every report it accepts to
// the watchers of this process at once: Watch merges them into its
// stream as KindProgress changes with Live set, so a dashboard served by
// the member whose region took the report sees it within milliseconds.
// Other members see the persisted reports. Live changes are best effort:
// a watcher too slow to take them loses some, never a persisted change.

// liveBuffer is how many live reports a watcher may fall behind by before
// the newest are dropped for it.
const liveBuffer = 4096

type liveFeed struct {
	mu   sync.Mutex
	subs map[chan Change]struct{}
}

func (f *liveFeed) subscribe() (<-chan Change, func()) {
	ch := make(chan Change, liveBuffer)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[chan Change]struct{}{}
	}
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}
}

// publish hands p, accepted for task id and not yet stored, to every
// watcher that has room.
func (f *liveFeed) publish(id string, p wire.Progress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		return
	}
	c := Change{Kind: KindProgress, TaskID: id, Progress: &p, Live: true}
	for ch := range f.subs {
		select {
		case ch <- c:
		default:
		}
	}
}

// liveOrder drops, from a watch's stream, a stored report older than
// (or the same as) a live one the watcher already had: the stream never
// goes back.
type liveOrder map[string][2]int64 // task -> attempt, seq of the newest live report sent

func (o liveOrder) sent(id string, p *wire.Progress) { o[id] = [2]int64{int64(p.Attempt), p.Seq} }

// keep reports whether the stored report p of task id is newer than what
// the watcher had live.
func (o liveOrder) keep(id string, p *wire.Progress) bool {
	l, ok := o[id]
	if !ok {
		return true
	}
	a := int64(p.Attempt)
	if a < l[0] || a == l[0] && p.Seq < l[1] {
		return false
	}
	delete(o, id) // caught up
	return a > l[0] || p.Seq > l[1]
}

// liveAhead reports whether live report p of task id is newer than
// the last stored one the watcher sent.
func liveAhead(last map[string][2]int64, id string, p *wire.Progress) bool {
	l, ok := last[id]
	a := int64(p.Attempt)
	return !ok || a > l[0] || a == l[0] && p.Seq > l[1]
}
