package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// PutRaw writes kvs as they are, in transactions of up to maxTxnOps puts
// (tests only: seeding big stores fast).
func (s *Store) PutRaw(ctx context.Context, kvs [][2]string) error {
	for len(kvs) > 0 {
		n := min(len(kvs), maxTxnOps)
		ops := make([]clientv3.Op, n)
		for i, kv := range kvs[:n] {
			ops[i] = clientv3.OpPut(kv[0], kv[1])
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("put raw: %w", err)
		}
		kvs = kvs[n:]
	}
	return nil
}

// ForgetSummaryJSON drops the JSON the task index keeps for every task
// (tests only: a list then marshals each task, as after a round of
// progress that changed them all).
func (s *Store) ForgetSummaryJSON() {
	s.index.mu.Lock()
	defer s.index.mu.Unlock()
	for _, e := range s.index.tasks {
		e.ver++
		e.js = nil
	}
}

// SetWatchRing bounds the shared watch's ring (store/sharedwatch.go) of
// the runs started from now on (tests only).
func (s *Store) SetWatchRing(entries int) {
	s.watches.mu.Lock()
	s.watches.ringCap = entries
	s.watches.mu.Unlock()
}

// SharedWatchStats is the shared watch's state (tests only): runs
// started, catch-up watches opened, whether a run is up and its
// subscribers.
func (s *Store) SharedWatchStats() (runs, catchUps int, running bool, subs int) {
	s.watches.mu.Lock()
	defer s.watches.mu.Unlock()
	if r := s.watches.run; r != nil {
		running, subs = true, r.subs
	}
	return s.watches.runsMade, s.watches.catchUps, running, subs
}

// BreakSharedWatch ends the shared watch's etcd watch as a broken stream
// would (tests only): the run reopens it from where it was.
func (s *Store) BreakSharedWatch() {
	s.watches.mu.Lock()
	defer s.watches.mu.Unlock()
	if r := s.watches.run; r != nil && r.wstop != nil {
		r.wstop()
	}
}

// HoldWriter stops the progress path's writer before its next round until
// release is called (tests only: a writer that is behind, or an etcd that
// does not answer).
func (pp *ProgressPath) HoldWriter() (release func()) {
	ch := make(chan struct{})
	pp.mu.Lock()
	pp.hold = ch
	pp.mu.Unlock()
	return sync.OnceFunc(func() {
		pp.mu.Lock()
		pp.hold = nil
		pp.mu.Unlock()
		close(ch)
	})
}

// QueuedReports counts the reports waiting for the progress path's
// writer (tests only).
func (pp *ProgressPath) QueuedReports() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return len(pp.queue)
}

// FoldEndedEvents runs one fold round (store/fold.go) over the tasks that
// ended before endedBefore, at most maxTasks of them; between its reads
// and its writes it calls between (nil: nothing).
func (s *Store) FoldEndedEvents(ctx context.Context, endedBefore time.Time, maxTasks int, between func()) (FoldStats, error) {
	s.foldRead = between
	defer func() { s.foldRead = nil }()
	return s.foldEndedEvents(ctx, endedBefore, maxTasks, time.Minute)
}

// NoteFold is the maintenance loop's step after a fold round
// (store/raftturnover.go).
func (s *Store) NoteFold(ctx context.Context, st FoldStats) { s.noteFold(ctx, st) }

// DiskSnapshotIndex is the raft index of the member's newest disk
// snapshot; AppliedIndex its applied index.
func (s *Store) DiskSnapshotIndex() (uint64, error) { return s.diskSnapshotIndex() }
func (s *Store) AppliedIndex() uint64               { return s.etcd.Server.AppliedIndex() }

// SnapshotCatchUpEntries is the embedded member's setting (store/etcd.go).
const SnapshotCatchUpEntries = snapshotCatchUpEntries
