package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// eventKeyCount is how many keys task id has under its events.
func eventKeyCount(t *testing.T, s *store.Store, id string) int {
	t.Helper()
	resp, err := s.Client().Get(context.Background(), "/tasks/"+id+"/events/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// indexCaughtUp waits for the task index (the fold's candidates) to see
// every write so far.
func indexCaughtUp(t *testing.T, s *store.Store) {
	t.Helper()
	if _, _, err := s.TaskSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func mustEvents(t *testing.T, s *store.Store, id string) []store.Event {
	t.Helper()
	evs, err := s.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func mustTransition(t *testing.T, s *store.Store, id string, to wire.Status) {
	t.Helper()
	if _, err := s.Transition(context.Background(), id, to, "test "+string(to)); err != nil {
		t.Fatalf("%s to %s: %v", id, to, err)
	}
}

// Tasks that ended before the cutoff have their event keys folded into
// one, which reads back as the same events in the same order (the first
// layout's decimal keys included); active tasks and tasks that ended after
// the cutoff keep theirs; the watch sends nothing for a fold; a second
// round has nothing to do.
func TestFoldKeepsEveryEventInOrder(t *testing.T) {
	s := openStore(t, nil)
	ctx := context.Background()
	completed := walk(t, ctx, s, "02:00:00:00:f0:01", wire.StatusCompleted)
	retried := walk(t, ctx, s, "02:00:00:00:f0:02", wire.StatusFailed)
	mustTransition(t, s, retried.ID, wire.StatusPending)
	mustTransition(t, s, retried.ID, wire.StatusReady)
	mustTransition(t, s, retried.ID, wire.StatusCancelled)
	old := walk(t, ctx, s, "02:00:00:00:f0:03", wire.StatusPending)
	var raw [][2]string // events in the first layout, before the task's creation
	for i := range 3 {
		at := old.Spec.CreatedAt.Add(time.Duration(i-3) * time.Second)
		raw = append(raw, [2]string{fmt.Sprintf("/tasks/%s/events/%020d", old.ID, at.UnixNano()),
			fmt.Sprintf(`{"kind":"stage","stage":"partitioning","message":"old %d"}`, i)})
	}
	if err := s.PutRaw(ctx, raw); err != nil {
		t.Fatal(err)
	}
	mustTransition(t, s, old.ID, wire.StatusCancelled)
	active := walk(t, ctx, s, "02:00:00:00:f0:04", wire.StatusInstalling)
	cutoff := time.Now()
	recent := walk(t, ctx, s, "02:00:00:00:f0:05", wire.StatusCancelled)
	mustTransition(t, s, recent.ID, wire.StatusPending)
	mustTransition(t, s, recent.ID, wire.StatusCancelled)

	folded := []string{completed.ID, retried.ID, old.ID}
	before := map[string][]store.Event{}
	for _, id := range append(slices.Clone(folded), active.ID, recent.ID) {
		before[id] = mustEvents(t, s, id)
		if n := eventKeyCount(t, s, id); n < 2 {
			t.Fatalf("task %s has %d event keys before the fold, want several", id, n)
		}
	}
	if len(before[old.ID]) != 5 {
		t.Fatalf("old-layout task's events %+v: want 3 old, created, cancelled", before[old.ID])
	}
	indexCaughtUp(t, s)
	cur, err := s.Client().Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := s.Watch(wctx, cur.Header.Revision+1)

	st, err := s.FoldEndedEvents(ctx, cutoff, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tasks != 3 || st.Conflicts != 0 {
		t.Fatalf("fold: %+v, want 3 tasks folded", st)
	}
	for _, id := range folded {
		if n := eventKeyCount(t, s, id); n != 1 {
			t.Errorf("task %s: %d event keys after the fold, want 1", id, n)
		}
	}
	for _, id := range []string{active.ID, recent.ID} {
		if n := eventKeyCount(t, s, id); n < 2 {
			t.Errorf("task %s (active or ended after the cutoff) was folded: %d keys", id, n)
		}
	}
	for id, want := range before {
		if got := mustEvents(t, s, id); !slices.Equal(got, want) {
			t.Errorf("task %s events after the fold:\n%+v\nwant\n%+v", id, got, want)
		}
	}
	// The watch: nothing for the fold, up to a task created after it.
	marker, err := s.CreateTask(ctx, spec("02:00:00:00:f0:06"))
	if err != nil {
		t.Fatal(err)
	}
	for c := range changes {
		if c.Kind == store.KindEvent && slices.Contains(folded, c.TaskID) {
			t.Errorf("the fold was sent as an event: %+v", *c.Event)
		}
		if c.Kind == store.KindTaskCreated && c.TaskID == marker.ID {
			break
		}
	}
	indexCaughtUp(t, s)
	if st, err := s.FoldEndedEvents(ctx, cutoff, 100, nil); err != nil || st.Tasks != 0 || st.Skipped != 0 {
		t.Fatalf("second round: %+v, %v: want nothing to do", st, err)
	}
	// A folded task is deleted whole.
	if _, err := s.DeleteTask(ctx, completed.ID); err != nil {
		t.Fatal(err)
	}
	if n := eventKeyCount(t, s, completed.ID); n != 0 {
		t.Errorf("deleted folded task keeps %d event keys", n)
	}
}

// A write between the fold's read and its write (a retry's status change
// and event, a delete of the task, an event written without a status
// change) fails the fold of that task only, which loses nothing and
// brings nothing back; the next round folds what is still ended, every
// event exactly once, in order.
func TestFoldUnderConcurrentWrites(t *testing.T) {
	s := openStore(t, nil)
	ctx := context.Background()
	retried := walk(t, ctx, s, "02:00:00:00:f1:01", wire.StatusFailed)
	mustTransition(t, s, retried.ID, wire.StatusPending)
	mustTransition(t, s, retried.ID, wire.StatusFailed)
	deleted := walk(t, ctx, s, "02:00:00:00:f1:02", wire.StatusCancelled)
	mustTransition(t, s, deleted.ID, wire.StatusPending)
	mustTransition(t, s, deleted.ID, wire.StatusCancelled)
	written := walk(t, ctx, s, "02:00:00:00:f1:03", wire.StatusCancelled)
	quiet := walk(t, ctx, s, "02:00:00:00:f1:04", wire.StatusCompleted)
	all := []string{retried.ID, deleted.ID, written.ID, quiet.ID}
	before := map[string][]store.Event{}
	for _, id := range all {
		before[id] = mustEvents(t, s, id)
	}
	indexCaughtUp(t, s)
	rawAt := time.Now().UTC()
	rawKey := fmt.Sprintf("/tasks/%s/events/%020d", written.ID, rawAt.UnixNano()) // sorts first: the first layout
	st, err := s.FoldEndedEvents(ctx, time.Now(), 100, func() {
		mustTransition(t, s, retried.ID, wire.StatusPending)
		if _, err := s.DeleteTask(ctx, deleted.ID); err != nil {
			t.Error(err)
		}
		if _, err := s.Client().Put(ctx, rawKey, `{"kind":"stage","stage":"partitioning","message":"late"}`); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Tasks != 1 || st.Conflicts != 3 {
		t.Fatalf("fold: %+v, want the quiet task folded and 3 conflicts", st)
	}
	if n := eventKeyCount(t, s, quiet.ID); n != 1 {
		t.Errorf("quiet task: %d event keys, want 1", n)
	}
	if got := mustEvents(t, s, quiet.ID); !slices.Equal(got, before[quiet.ID]) {
		t.Errorf("quiet task's events %+v, want %+v", got, before[quiet.ID])
	}
	if resp, err := s.Client().Get(ctx, "/tasks/"+deleted.ID+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Errorf("deleted task: %v keys left (%v), want none", resp.Count, err)
	}
	got := mustEvents(t, s, retried.ID)
	if len(got) != len(before[retried.ID])+1 || !slices.Equal(got[:len(got)-1], before[retried.ID]) || got[len(got)-1].To != wire.StatusPending {
		t.Fatalf("retried task's events %+v: want those before and the retry", got)
	}
	wantRetried := got
	wantWritten := append([]store.Event{{At: rawAt, Kind: "stage", Stage: wire.StagePartitioning, Message: "late"}}, before[written.ID]...)
	if got := mustEvents(t, s, written.ID); !slices.Equal(got, wantWritten) {
		t.Fatalf("written task's events %+v, want %+v", got, wantWritten)
	}

	// The next round: the retried task is active (left), the written one
	// folds with its late event.
	indexCaughtUp(t, s)
	if st, err = s.FoldEndedEvents(ctx, time.Now(), 100, nil); err != nil || st.Tasks != 1 || st.Conflicts != 0 {
		t.Fatalf("second round: %+v, %v: want the written task folded", st, err)
	}
	if got := mustEvents(t, s, written.ID); !slices.Equal(got, wantWritten) || eventKeyCount(t, s, written.ID) != 1 {
		t.Fatalf("written task after its fold: %+v in %d keys, want %+v in 1", got, eventKeyCount(t, s, written.ID), wantWritten)
	}
	mustTransition(t, s, retried.ID, wire.StatusCancelled)
	wantRetried = mustEvents(t, s, retried.ID)
	indexCaughtUp(t, s)
	if st, err = s.FoldEndedEvents(ctx, time.Now(), 100, nil); err != nil || st.Tasks != 1 {
		t.Fatalf("third round: %+v, %v: want the retried task folded", st, err)
	}
	if got := mustEvents(t, s, retried.ID); !slices.Equal(got, wantRetried) || eventKeyCount(t, s, retried.ID) != 1 {
		t.Fatalf("retried task after its fold: %+v in %d keys, want %+v in 1", got, eventKeyCount(t, s, retried.ID), wantRetried)
	}
}

// A folded task that is retried past its history limit drops only the
// events over it from the folded key (not the whole history), counts them
// in the dropped record, and a second fold takes the new keys after the
// folded one.
func TestFoldedHistoryBound(t *testing.T) {
	const limit = 6
	s := openStore(t, func(c *store.Config) { c.MaxTaskEvents = limit })
	ctx := context.Background()
	task := walk(t, ctx, s, "02:00:00:00:f2:01", wire.StatusFailed) // created, failed
	mustTransition(t, s, task.ID, wire.StatusPending)
	mustTransition(t, s, task.ID, wire.StatusCancelled) // 4 events, 4 keys
	indexCaughtUp(t, s)
	if st, err := s.FoldEndedEvents(ctx, time.Now(), 100, nil); err != nil || st.Tasks != 1 {
		t.Fatalf("fold: %+v, %v", st, err)
	}
	mustTransition(t, s, task.ID, wire.StatusPending)
	mustTransition(t, s, task.ID, wire.StatusFailed) // 6: the limit
	full := mustEvents(t, s, task.ID)
	if len(full) != limit {
		t.Fatalf("%d events, want %d: %+v", len(full), limit, full)
	}
	mustTransition(t, s, task.ID, wire.StatusPending) // 7: two go (one for the record)
	got := mustEvents(t, s, task.ID)
	if len(got) != limit || got[0].Kind != store.EventKindDropped || got[0].Dropped != 2 {
		t.Fatalf("events past the limit %+v: want the dropped record (2) first, %d in all", got, limit)
	}
	if !slices.Equal(got[1:limit-1], full[2:]) || got[limit-1].To != wire.StatusPending {
		t.Fatalf("events past the limit %+v: want the record, %+v and the retry", got, full[2:])
	}
	mustTransition(t, s, task.ID, wire.StatusCancelled)
	want := mustEvents(t, s, task.ID)
	indexCaughtUp(t, s)
	if st, err := s.FoldEndedEvents(ctx, time.Now(), 100, nil); err != nil || st.Tasks != 1 {
		t.Fatalf("second fold: %+v, %v", st, err)
	}
	if got := mustEvents(t, s, task.ID); !slices.Equal(got, want) || eventKeyCount(t, s, task.ID) != 2 {
		t.Fatalf("after the second fold: %+v in %d keys, want %+v in 2 (the record and the folded key)", got, eventKeyCount(t, s, task.ID), want)
	}
}

// The maintenance loop folds a task once it ended longer ago than the
// compaction retention, not before, and the task reads the same.
func TestMaintenanceFoldsEndedTasks(t *testing.T) {
	const retention = 2 * time.Second
	s := openStore(t, func(c *store.Config) {
		c.Space = store.SpaceConfig{Interval: 100 * time.Millisecond, CompactionRetention: retention}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	s.StartTaskIndex()
	before := time.Now() // the task ends after it
	task := walk(t, ctx, s, "02:00:00:00:f3:01", wire.StatusCompleted)
	want := mustEvents(t, s, task.ID)
	go func() { defer close(done); s.RunMaintenance(ctx) }()
	for eventKeyCount(t, s, task.ID) > 1 {
		if time.Since(before) > time.Minute {
			t.Fatal("not folded within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if since := time.Since(before); since < retention {
		t.Fatalf("folded %s after the task ended, before the retention (%s)", since, retention)
	}
	if got := mustEvents(t, s, task.ID); !slices.Equal(got, want) {
		t.Fatalf("events after the maintenance loop's fold %+v, want %+v", got, want)
	}
}
