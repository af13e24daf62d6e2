package app

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/lpmos/lpmos/store"
)

// Memory lpmos needed once and no longer does goes back to the OS (issue
// 14: RSS with 10,000 tasks < 150 MiB; BENCHMARKS.md, "Issue 14: RSS with
// 10,000 tasks (rss)"):
//
//   - The start-up loads (etcd's restore of its key index, the task index,
//     the live view's and the task metrics' snapshots, the region's caches)
//     grow the Go heap to a peak the runtime then keeps (it returns only
//     what exceeds ~1.1x the next GC goal): ~130 MiB anonymous for a ~70 MB
//     live heap with 10,000 tasks. Once every load is done, the heap's free
//     pages are returned (debug.FreeOSMemory: one GC, then all free pages).
//
// The mapped etcd db file's pages (~110 MiB file-backed RSS with 10,000
// tasks) are not dropped: they are clean page cache the kernel reclaims
// when it needs the memory, and dropping them from the mapping would
// change the RSS figure, not the memory in use (a cgroup is charged for
// them all the same).
//
// Again after each compaction or defrag of the embedded member
// (etcd's periodic compaction runs every CompactionRetention, 5 minutes
// by default) and after each fold of 1 MiB or more of ended tasks' events
// (store/fold.go, store/raftturnover.go: a whole fleet's the first time;
// it reads every folded task's events): each is a peak of its own.
// Nothing else changes: no memory limit, GOGC as it is.

// memReleaseEvery is how often memRelease checks the loads and the
// compactions.
const memReleaseEvery = 2 * time.Second

// memStore is what memRelease needs of the store.
type memStore interface {
	FinishedCompaction() int64
	Space() store.SpaceStatus
	FoldTurns() int64
}

type memRelease struct {
	st     memStore
	loaded []func() bool // the start-up loads: all true once each is done
	free   func()        // debug.FreeOSMemory (tests replace it)
	every  time.Duration
	log    *slog.Logger
}

func newMemRelease(st memStore, log *slog.Logger, loaded ...func() bool) *memRelease {
	return &memRelease{st: st, loaded: loaded, free: debug.FreeOSMemory, every: memReleaseEvery, log: log}
}

// run waits for the start-up loads, releases, then releases after each
// compaction, defrag or large fold, until ctx ends.
func (m *memRelease) run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for !m.allLoaded() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	m.release("the start-up loads are done")
	compacted, defrags, folds := m.st.FinishedCompaction(), m.st.Space().Defrags, m.st.FoldTurns()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, d, f := m.st.FinishedCompaction(), m.st.Space().Defrags, m.st.FoldTurns()
		switch {
		case d != defrags:
			m.release("etcd defragmented")
		case c != compacted:
			m.release("etcd compacted")
		case f != folds:
			m.release("ended tasks' events folded")
		default:
			continue
		}
		compacted, defrags, folds = c, d, f
	}
}

func (m *memRelease) allLoaded() bool {
	for _, l := range m.loaded {
		if !l() {
			return false
		}
	}
	return true
}

func (m *memRelease) release(why string) {
	start := time.Now()
	m.free()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.log.Info("memory: returned what lpmos no longer needs to the OS", "why", why,
		"heap_in_use_bytes", ms.HeapInuse, "heap_returned_bytes", ms.HeapReleased, "took", time.Since(start).Round(time.Millisecond))
}
