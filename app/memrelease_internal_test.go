package app

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
)

// fakeMemStore counts memRelease's calls; each FinishedCompaction is one
// of its checks.
type fakeMemStore struct {
	compacted, defrags atomic.Int64
	folds              atomic.Int64
	checks             chan struct{} // a FinishedCompaction since the last receive
}

func (f *fakeMemStore) FinishedCompaction() int64 {
	select {
	case f.checks <- struct{}{}:
	default:
	}
	return f.compacted.Load()
}

func (f *fakeMemStore) Space() store.SpaceStatus { return store.SpaceStatus{Defrags: f.defrags.Load()} }

func (f *fakeMemStore) FoldTurns() int64 { return f.folds.Load() }

// TestMemReleaseOnceAfterTheLoadsThenAfterCompactionsAndDefrags: nothing
// is released while a start-up load is not done; once all are, the heap
// is freed exactly once (whatever the checks
// after); then once more after each compaction, each defrag and each
// large fold.
func TestMemReleaseOnceAfterTheLoadsThenAfterCompactionsAndDefrags(t *testing.T) {
	fs := &fakeMemStore{checks: make(chan struct{}, 1)}
	var (
		hubLoaded, regionLoaded atomic.Bool
		polled                  = make(chan struct{}, 1)
		frees                   = make(chan bool, 10) // the loads' state at each free
	)
	m := newMemRelease(fs, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func() bool {
			select {
			case polled <- struct{}{}:
			default:
			}
			return hubLoaded.Load()
		},
		regionLoaded.Load)
	m.every = 100 * time.Microsecond
	m.free = func() { frees <- hubLoaded.Load() && regionLoaded.Load() }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	// Loads not done: polled again and again, nothing released.
	for range 5 {
		<-polled
	}
	hubLoaded.Store(true)
	for range 5 {
		<-polled
	}
	if len(frees) != 0 {
		t.Fatalf("released before every load was done: %d frees", len(frees))
	}
	regionLoaded.Store(true)
	if all := <-frees; !all {
		t.Fatal("freed before the loads were done")
	}
	// Checked many times since: still the one release.
	for range 20 {
		<-fs.checks
	}
	if len(frees) != 0 {
		t.Fatalf("after the loads: %d more frees; want exactly one release", len(frees))
	}
	// A compaction: one more release; a defrag: one more; a large fold:
	// one more.
	fs.compacted.Store(100)
	<-frees
	fs.defrags.Store(1)
	<-frees
	fs.folds.Store(1)
	<-frees
	for range 20 {
		<-fs.checks
	}
	if len(frees) != 0 {
		t.Fatalf("after a compaction, a defrag and a fold: %d more frees; want 4 releases in all", len(frees))
	}
}
