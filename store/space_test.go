package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func openStore(t *testing.T, mod func(*store.Config)) *store.Store {
	t.Helper()
	cfg := storetest.Config(t, t.TempDir())
	if mod != nil {
		mod(&cfg)
	}
	s, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// A task's history stays bounded: past the limit the oldest events go, the
// newest stay, and the first event says how many were dropped.
func TestEventHistoryBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit, flips int // limit 0: the default
	}{
		// The default limit: 255 events, 55 over it (enough to drop
		// repeatedly; each flip reads the task's 200 events, so more flips
		// only cost CPU under -race).
		{limit: 0, flips: store.DefaultMaxTaskEvents + 50},
		{limit: 5, flips: 0},
		{limit: 5, flips: 20},
		{limit: 10, flips: 3}, // 8 events: under the limit, nothing dropped
	} {
		t.Run(fmt.Sprintf("limit%d_flips%d", tc.limit, tc.flips), func(t *testing.T) {
			s := openStore(t, func(c *store.Config) { c.MaxTaskEvents = tc.limit })
			limit := tc.limit
			if limit == 0 {
				limit = store.DefaultMaxTaskEvents
			}
			ctx := context.Background()
			task := walk(t, ctx, s, "02:00:00:00:09:01", wire.StatusInstalling) // 5 events
			written := 5
			last := ""
			for i := range tc.flips {
				to := wire.StatusStalled
				if i%2 == 1 {
					to = wire.StatusInstalling
				}
				last = fmt.Sprintf("flip %d", i)
				if _, err := s.Transition(ctx, task.ID, to, last); err != nil {
					t.Fatalf("flip %d: %v", i, err)
				}
				written++
			}
			evs, err := s.Events(ctx, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) > limit {
				t.Fatalf("%d events kept, limit %d", len(evs), limit)
			}
			if written <= limit {
				if len(evs) != written || evs[0].Kind == store.EventKindDropped {
					t.Fatalf("under the limit: %d events (first %+v), want all %d", len(evs), evs[0], written)
				}
				return
			}
			if len(evs) != limit {
				t.Fatalf("%d events kept, want exactly the limit %d", len(evs), limit)
			}
			d := evs[0]
			wantDropped := int64(written - (limit - 1))
			if d.Kind != store.EventKindDropped || d.Dropped != wantDropped || !strings.Contains(d.Message, fmt.Sprintf("%d older events dropped", wantDropped)) {
				t.Fatalf("first event %+v, want the drop record of %d events", d, wantDropped)
			}
			if evs[len(evs)-1].Message != last {
				t.Fatalf("newest event %+v, want %q", evs[len(evs)-1], last)
			}
			for i := 2; i < len(evs); i++ { // the rest in order, none lost in between
				if !evs[i].At.After(evs[i-1].At) {
					t.Fatalf("events out of order at %d: %v then %v", i, evs[i-1].At, evs[i].At)
				}
			}
		})
	}
}

// A watch from a revision etcd compacted away ends with one resync change
// naming the compaction revision, instead of hanging or missing changes.
func TestWatchFromCompactedRevisionAsksForResync(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	task := walk(t, ctx, s, "02:00:00:00:09:02", wire.StatusInstalling)
	var rev int64
	for _, to := range []wire.Status{wire.StatusStalled, wire.StatusInstalling, wire.StatusStalled} {
		moved, err := s.Transition(ctx, task.ID, to, "")
		if err != nil {
			t.Fatal(err)
		}
		rev = moved.Revision
	}
	if _, err := s.Client().Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	wantResyncThenClosed(t, ctx, s.Watch(ctx, task.Revision+1), rev)
}

// wantResyncThenClosed: a watch from a compacted revision sends one resync
// (KindWatchRestart at the compaction revision rev), then closes.
func wantResyncThenClosed(t *testing.T, ctx context.Context, ch <-chan store.Change, rev int64) {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok || c.Kind != store.KindWatchRestart || c.Revision != rev {
			t.Fatalf("first change %+v (open %v), want a resync at compaction revision %d", c, ok, rev)
		}
	case <-ctx.Done():
		t.Fatal("no resync from a compacted watch")
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("watch channel still open after the resync")
		}
	case <-ctx.Done():
		t.Fatal("watch channel not closed after the resync")
	}
}
