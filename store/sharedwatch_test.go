package store_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The shared watch (store/sharedwatch.go): one etcd watch per Store,
// fanned out to every watcher of the process.

// line is what a stream comparison looks at of a change.
func line(c store.Change) string {
	s := fmt.Sprintf("%d %s %s %s", c.Revision, c.Kind, c.TaskID, c.Key)
	switch {
	case c.Status != nil:
		s += " " + string(c.Status.Status)
	case c.Event != nil:
		s += " " + c.Event.Kind + " " + string(c.Event.To) + " " + c.Event.Stage + " " + c.Event.Message
	}
	return s
}

// collectUntil reads ch until a change of key end (included), or fails.
func collectUntil(t *testing.T, ctx context.Context, ch <-chan store.Change, end string) []string {
	t.Helper()
	var got []string
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("stream closed after %d changes, before %s", len(got), end)
			}
			if c.Kind == store.KindWatchRestart {
				t.Fatalf("stream asked for a resync after %d changes: %+v", len(got), c)
			}
			got = append(got, line(c))
			if c.Key == end {
				return got
			}
		case <-ctx.Done():
			t.Fatalf("stream: %d changes, never %s", len(got), end)
		}
	}
}

// sharedUp starts the shared watch with a subscriber from now and
// returns once it runs (it saw a write made after it subscribed).
func sharedUp(t *testing.T, ctx context.Context, s *store.Store) <-chan store.Change {
	t.Helper()
	ch := s.Watch(ctx, 0)
	for {
		if err := s.PutRaw(ctx, [][2]string{{"/machines/up", "{}"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
			return ch
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the shared watch never started")
		}
	}
}

// Two subscribers at different start revisions get the same ordered
// stream from where each started (history through a private catch-up
// watch, then the ring, whether or not the ring still holds their
// revision).
func TestSharedWatchStartRevisions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ring int // entries the shared watch keeps
	}{
		{"ring holds both", 0},
		{"older revision evicted", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := storetest.New(t)
			s.SetWatchRing(tc.ring)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sharedUp(t, ctx, s)
			_, rev0, err := s.ListTasks(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			ref := s.Watch(ctx, rev0+1) // reads as it goes
			task := walk(t, ctx, s, "02:00:00:00:0a:01", wire.StatusApproved)
			_, revMid, err := s.ListTasks(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: "partitioning", Percentage: 10}); err != nil {
				t.Fatal(err)
			}
			task2 := walk(t, ctx, s, "02:00:00:00:0a:02", wire.StatusApproved)
			if _, err := s.Transition(ctx, task2.ID, wire.StatusCancelled, "test"); err != nil {
				t.Fatal(err)
			}
			if err := s.PutRaw(ctx, [][2]string{{"/machines/end", "{}"}}); err != nil {
				t.Fatal(err)
			}
			want := collectUntil(t, ctx, ref, "/machines/end")
			_, catch0, _, _ := s.SharedWatchStats()
			old := collectUntil(t, ctx, s.Watch(ctx, rev0+1), "/machines/end")
			mid := collectUntil(t, ctx, s.Watch(ctx, revMid+1), "/machines/end")
			if strings.Join(old, "\n") != strings.Join(want, "\n") {
				t.Fatalf("subscriber from %d:\n%s\nwant\n%s", rev0+1, strings.Join(old, "\n"), strings.Join(want, "\n"))
			}
			var wantMid []string
			for _, l := range want {
				var r int64
				fmt.Sscan(l, &r)
				if r > revMid {
					wantMid = append(wantMid, l)
				}
			}
			if len(wantMid) == 0 || strings.Join(mid, "\n") != strings.Join(wantMid, "\n") {
				t.Fatalf("subscriber from %d:\n%s\nwant\n%s", revMid+1, strings.Join(mid, "\n"), strings.Join(wantMid, "\n"))
			}
			runs, catch1, _, _ := s.SharedWatchStats()
			if runs != 1 {
				t.Errorf("%d shared watches started, want 1", runs)
			}
			if catch1 < catch0+2 {
				t.Errorf("catch-up watches %d -> %d, want one per subscriber from history", catch0, catch1)
			}
		})
	}
}

// A subscriber from a revision etcd compacted gets one resync change
// naming the compaction revision and its channel closes, as with its own
// watch, whether or not the shared watch runs and its ring still holds
// the revision. Another subscriber goes on.
func TestSharedWatchCompactedRevision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		running bool // another subscriber keeps the shared watch up
		ring    int
	}{
		{"no shared watch", false, 0},
		{"ring moved past it", true, 1},
		{"ring holds it", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := storetest.New(t)
			s.SetWatchRing(tc.ring)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var other <-chan store.Change
			if tc.running {
				other = sharedUp(t, ctx, s)
			}
			_, rev0, err := s.ListTasks(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"/machines/a", "/machines/b"} { // two revisions
				if err := s.PutRaw(ctx, [][2]string{{k, "{}"}}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.running {
				collectUntil(t, ctx, other, "/machines/b")
			}
			_, rev, err := s.ListTasks(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Client().Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
				t.Fatal(err)
			}
			wantResyncThenClosed(t, ctx, s.Watch(ctx, rev0+1), rev)
			if tc.running {
				if err := s.PutRaw(ctx, [][2]string{{"/machines/end", "{}"}}); err != nil {
					t.Fatal(err)
				}
				if got := collectUntil(t, ctx, other, "/machines/end"); len(got) != 1 {
					t.Fatalf("the other watcher saw %q, want /machines/end", got)
				}
			}
		})
	}
}

// A subscriber that does not read does not hold up another: the other
// gets every change while the first's channel is full, and the first,
// read later, still gets every change in order (it fell behind the ring
// and caught up on a private watch).
func TestSharedWatchBlockedSubscriber(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	s.SetWatchRing(512)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, rev0, err := s.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	blocked := s.Watch(ctx, rev0+1)
	reader := s.Watch(ctx, rev0+1)
	var kvs [][2]string
	for i := range 3000 { // 24 transactions of 128 keys, past the blocked one's channel (256) and the ring
		kvs = append(kvs, [2]string{fmt.Sprintf("/machines/m%04d", i), "{}"})
	}
	kvs = append(kvs, [2]string{"/machines/end", "{}"})
	if err := s.PutRaw(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	got := collectUntil(t, ctx, reader, "/machines/end")
	if len(got) != len(kvs) {
		t.Fatalf("reader got %d changes, want %d", len(got), len(kvs))
	}
	for i, l := range got {
		if !strings.HasSuffix(l, " "+kvs[i][0]) {
			t.Fatalf("reader's change %d is %q, want %s", i, l, kvs[i][0])
		}
	}
	late := collectUntil(t, ctx, blocked, "/machines/end")
	if strings.Join(late, "\n") != strings.Join(got, "\n") {
		t.Fatalf("the blocked subscriber got %d changes, different from the reader's %d", len(late), len(got))
	}
	if _, catchUps, _, _ := s.SharedWatchStats(); catchUps == 0 {
		t.Error("the blocked subscriber never fell behind the ring: the test did not test it")
	}
}

// A shared watch whose etcd stream breaks is reopened from where it was:
// its subscribers see every change, no resync, and no second run.
func TestSharedWatchRestart(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, rev0, err := s.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Watch(ctx, rev0+1)
	if err := s.PutRaw(ctx, [][2]string{{"/machines/a", "{}"}}); err != nil {
		t.Fatal(err)
	}
	first := collectUntil(t, ctx, ch, "/machines/a")
	s.BreakSharedWatch()
	if err := s.PutRaw(ctx, [][2]string{{"/machines/b", "{}"}, {"/machines/c", "{}"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRaw(ctx, [][2]string{{"/machines/end", "{}"}}); err != nil {
		t.Fatal(err)
	}
	rest := collectUntil(t, ctx, ch, "/machines/end")
	if len(first) != 1 || len(rest) != 3 || !strings.HasSuffix(rest[0], "/machines/b") || !strings.HasSuffix(rest[1], "/machines/c") {
		t.Fatalf("changes %q then %q, want a, then b, c, end", first, rest)
	}
	if runs, _, _, _ := s.SharedWatchStats(); runs != 1 {
		t.Fatalf("%d runs, want the one reopened", runs)
	}
}

// goroutinesIn counts the goroutines whose stack has fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// Cancelling every subscriber (reading, blocked, catching up) ends their
// goroutines and the shared watch's; the next subscriber starts a new
// one.
func TestSharedWatchCancelFrees(t *testing.T) {
	// Not parallel: it counts the package's goroutines of the shared watch.
	s := storetest.New(t)
	s.SetWatchRing(4)
	ctx := context.Background()
	_, rev0, err := s.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	reading := s.Watch(wctx, 0)
	blocked := s.WatchStored(wctx, 0, store.KindMachine)
	var kvs [][2]string
	for i := range 400 {
		kvs = append(kvs, [2]string{fmt.Sprintf("/machines/m%04d", i), "{}"})
	}
	if err := s.PutRaw(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	catchingUp := s.Watch(wctx, rev0+1) // from before the ring: a private watch
	collectUntil(t, wctx, reading, kvs[len(kvs)-1][0])
	<-catchingUp
	_ = blocked // never read
	if n := goroutinesIn("store.(*watchHub).read"); n != 1 {
		t.Fatalf("%d shared watch goroutines, want 1", n)
	}
	if _, _, running, subs := s.SharedWatchStats(); !running || subs != 3 {
		t.Fatalf("running %v with %d subscribers, want 3", running, subs)
	}
	cancel()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, running, _ := s.SharedWatchStats()
		hub, subs := goroutinesIn("store.(*watchHub).read"), goroutinesIn("store.(*Store).watch.func")
		if !running && hub == 0 && subs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after cancel: running %v, %d shared watch goroutines, %d subscriber goroutines", running, hub, subs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx2, cancel2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancel2()
	ch := s.Watch(ctx2, 0)
	for { // the new run is up once the watch sees a write made after it subscribed
		if err := s.PutRaw(ctx2, [][2]string{{"/machines/again", "{}"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-ch:
			if c.Key != "/machines/again" {
				t.Fatalf("new watch got %+v", c)
			}
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	if runs, _, running, _ := s.SharedWatchStats(); runs != 2 || !running {
		t.Fatalf("%d runs (running %v), want a second one", runs, running)
	}
}
