package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The raft log after a fold (issue 14: RSS with 10,000 tasks, right after a
// restart). A restarting member replays its WAL from its newest disk
// snapshot into memory (etcd's raft MemoryStorage), and keeps those entries
// until SnapshotCatchUpEntries more have passed. etcd takes a disk snapshot
// every snapshotCount applied entries (store/etcd.go), so an idle member
// that just folded a fleet (~1 KB of folded events per task in a few
// hundred transactions) and then restarts holds the fold's transactions,
// ~2 KB of heap per folded task, until ~2,000 more writes: 163 instead of
// 140 MiB with 10,000 tasks (BENCHMARKS.md, rss9 and rss10).
//
// etcd does not let lpmos ask for a snapshot (EtcdServer.ForceSnapshot
// sets a field its apply loop reads without a lock: it is for the apply
// loop itself), so once a fold has written foldTurnoverBytes since the
// member's newest disk snapshot and has nothing left to fold, the leader
// proposes as many no-op entries as the member needs to reach its next
// snapshot: transactions whose compare never holds, so they change no key
// and no revision (an empty failure branch). The fold's entries are then
// before the snapshot and a restart does not read them. Every member
// applies the same entries, so the followers reach a snapshot within those
// entries too unless theirs was taken far from the leader's. The entries
// go on past SnapshotCatchUpEntries, so the member that folded drops the
// fold from its in-memory raft log as well (~1,100 entries, ~1 s, once per
// MiB folded while the member is otherwise idle; a member that writes
// reaches its snapshots on its own and proposes none).

const (
	// foldTurnoverBytes is how much folded data since the newest disk
	// snapshot calls for the no-op entries (1 MiB: ~1,000 tasks, ~2 MiB
	// of a restarted member's heap).
	foldTurnoverBytes = 1 << 20
	// turnoverKey is the key the no-op transactions name (never written).
	turnoverKey = "/lpmos/raft-turnover"
	// turnoverParallel is how many no-op transactions are in flight at
	// once (raft batches them into fewer WAL writes).
	turnoverParallel = 32
	// etcdMemorySnapshotEvery is how often etcd's apply loop snapshots
	// in memory and compacts its in-memory raft log (etcdserver's
	// memorySnapshotCount, unexported).
	etcdMemorySnapshotEvery = 100
)

// foldLog is what the folds wrote since the member's newest disk snapshot
// (maintenance loop only).
type foldLog struct {
	bytes   int    // folded values' bytes written since the snapshot
	applied uint64 // the member's applied index after the last fold that wrote
}

// snapDir is the embedded member's snapshot directory, as etcd names it.
func (s *Store) snapDir() string { return s.etcd.Server.Cfg.SnapDir() }

// diskSnapshotIndex is the raft index of the member's newest disk
// snapshot: the newest {term}-{index}.snap file's index (0: none).
func (s *Store) diskSnapshotIndex() (uint64, error) {
	ents, err := os.ReadDir(s.snapDir())
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", s.snapDir(), err)
	}
	var newest uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".snap")
		if !ok {
			continue
		}
		_, idx, ok := strings.Cut(name, "-")
		if !ok {
			continue
		}
		i, err := strconv.ParseUint(idx, 16, 64)
		if err == nil && i > newest {
			newest = i
		}
	}
	return newest, nil
}

// noteFold records a fold round's written bytes and, when the folds since
// the newest disk snapshot reach foldTurnoverBytes and nothing is left to
// fold, moves the member's raft log past them (turnRaftLog).
func (s *Store) noteFold(ctx context.Context, st FoldStats) {
	if s.etcd == nil || (st.Bytes == 0 && s.foldLog.bytes == 0) {
		return
	}
	snapi, err := s.diskSnapshotIndex()
	if err != nil {
		s.log.Warn("store: fold: could not read the member's snapshots", "error", err)
		return
	}
	if s.foldLog.applied <= snapi {
		s.foldLog.bytes = 0 // behind a snapshot: a restart does not read them
	}
	if st.Bytes > 0 {
		s.foldLog.bytes += st.Bytes
		s.foldLog.applied = s.etcd.Server.AppliedIndex()
	}
	if s.foldLog.bytes < foldTurnoverBytes || st.Left > 0 {
		return
	}
	n, err := s.turnRaftLog(ctx, s.foldLog.applied)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("store: fold: could not move the raft log past the fold (retried next round)", "error", err)
		}
		return
	}
	s.log.Info("store: moved the raft log past the fold (a restart does not replay it)",
		"folded_bytes", s.foldLog.bytes, "noop_entries", n)
	s.foldLog.bytes = 0
	s.turns.Add(1)
}

// FoldTurns counts the times this member moved its raft log past a fold
// of 1 MiB or more: a fold of that size read every folded task's events
// and dropped its raft entries from memory, a heap peak lpmos returns to
// the OS after it (app/memrelease.go).
func (s *Store) FoldTurns() int64 { return s.turns.Load() }

// turnRaftLog proposes no-op entries until the member has a disk snapshot
// at or after index past (a restart replays nothing up to past) and has
// applied enough after it to drop the entries up to past from its memory
// too (etcd compacts its in-memory log to SnapshotCatchUpEntries before
// each snapshot, taken in memory every etcdMemorySnapshotEvery entries);
// at most 4 snapshotCounts of them. It returns how many it proposed.
func (s *Store) turnRaftLog(ctx context.Context, past uint64) (int, error) {
	total := 0
	for total <= 4*snapshotCount {
		snapi, err := s.diskSnapshotIndex()
		if err != nil {
			return total, err
		}
		applied := s.etcd.Server.AppliedIndex()
		n := 0
		if snapi < past {
			// etcd snapshots once applied - snapshot index > snapshotCount.
			n = int(snapshotCount) + 1 - int(min(applied-min(snapi, applied), snapshotCount))
		}
		if dropped := past + snapshotCatchUpEntries + etcdMemorySnapshotEvery + 1; applied < dropped {
			n = max(n, int(dropped-applied))
		}
		if n == 0 {
			return total, nil
		}
		if err := s.noopEntries(ctx, n); err != nil {
			return total, err
		}
		total += n
		// The apply loop writes the snapshot after it answers the entry
		// that calls for it.
		for i := 0; i < 100 && ctx.Err() == nil; i++ {
			if snapi, err := s.diskSnapshotIndex(); err != nil || snapi >= past {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return total, fmt.Errorf("no disk snapshot after %d no-op entries", total)
}

// noopEntries proposes n transactions that change nothing: their compare
// (a key's version under 0) never holds and their failure branch is empty.
func (s *Store) noopEntries(ctx context.Context, n int) error {
	never := clientv3.Compare(clientv3.Version(turnoverKey), "<", 0)
	put := clientv3.OpPut(turnoverKey, "")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	work := make(chan struct{})
	for range min(turnoverParallel, n) {
		wg.Go(func() {
			for range work {
				if _, err := s.cli.Txn(ctx).If(never).Then(put).Commit(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("no-op entry: %w", err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return firstErr
}
