package store_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// eventKeys counts the event keys of task id in etcd.
func eventKeys(t *testing.T, ctx context.Context, s *store.Store, id string) int64 {
	t.Helper()
	resp, err := s.Client().Get(ctx, "/tasks/"+id+"/events/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func events(t *testing.T, ctx context.Context, s *store.Store, id string) []store.Event {
	t.Helper()
	evs, err := s.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// watchedEvents collects the events the watch publishes for task id until
// it publishes the creation of task marker (written after them), in time
// order (the watch publishes one transaction's events in the order the
// transaction wrote them, Events in time order: TestEventsOfOneTransaction).
func watchedEvents(t *testing.T, changes <-chan store.Change, id, marker string) []store.Event {
	t.Helper()
	var got []store.Event
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-changes:
			if c.TaskID == id && c.Kind == store.KindEvent {
				got = append(got, *c.Event)
			}
			if c.TaskID == marker && c.Kind == store.KindTaskCreated {
				sort.SliceStable(got, func(i, j int) bool { return got[i].At.Before(got[j].At) })
				return got
			}
		case <-deadline:
			t.Fatalf("watch saw %d events and not the marker: %+v", len(got), got)
		}
	}
}

// marker creates a task whose creation the watch publishes after
// everything written before.
func marker(t *testing.T, ctx context.Context, s *store.Store, mac string) string {
	t.Helper()
	task, err := s.CreateTask(ctx, spec(mac))
	if err != nil {
		t.Fatal(err)
	}
	return task.ID
}

// The transaction that ends a task (completed, failed, cancelled; by
// Transition or Fail) folds its older event keys into one history key: an
// ended task keeps two event keys; one the progress path's batch completed
// is folded whole just after (one key). Events
// reads the same history before and after, and the watch (the /ws feed)
// publishes each event once, with the content and in the order Events
// reads; a retry and a second end fold again.
func TestEndedTaskHistoryFolded(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, nil)
	for n, end := range []string{"completed", "failed", "cancelled", "final report"} {
		t.Run(end, func(t *testing.T) {
			mac := fmt.Sprintf("02:00:00:00:0f:%02x", n)
			start, err := s.Client().Get(ctx, "/none")
			if err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			changes := s.Watch(wctx, start.Header.Revision+1)
			task, tok := agentSession(t, ctx, s, mac)
			stages := []wire.Progress{
				{Stage: wire.StagePartitioning, Percentage: 0}, {Stage: wire.StageDownloading, Percentage: 20},
				{Stage: wire.StageInstalling, Percentage: 60}, {Stage: wire.StageConfiguring, Percentage: 90},
				{Stage: wire.StageConfiguring, Percentage: 100},
			}
			if end != "final report" {
				for i, p := range stages {
					p.Seq, p.Message = int64(i+1), "at "+p.Stage
					if _, err := s.ReportAgentProgress(ctx, task.ID, p); err != nil {
						t.Fatalf("progress %d: %v", i, err)
					}
				}
			}
			var pp *store.ProgressPath
			if end == "final report" {
				pp = runProgressPath(t, s, time.Millisecond, time.Hour)
				for i, p := range stages {
					p.Seq, p.Message = int64(i+1), "at "+p.Stage
					reportCached(t, ctx, pp, task.ID, tok, p)
				}
			}
			before := events(t, ctx, s, task.ID)
			if n := eventKeys(t, ctx, s, task.ID); n < 6 {
				t.Fatalf("%d event keys before the end, want one per transaction (>= 6)", n)
			}
			var ending []string
			switch end {
			case "completed":
				_, err = s.Transition(ctx, task.ID, wire.StatusCompleted, store.CompletedReason)
				ending = []string{"status:completed"}
			case "failed":
				_, err = s.Fail(ctx, task.ID, "disk gone", []string{"line 1", "line 2"})
				ending = []string{"status:failed", "error:"}
			case "cancelled":
				_, err = s.Transition(ctx, task.ID, wire.StatusCancelled, "by test")
				ending = []string{"status:cancelled"}
			case "final report":
				res := reportCached(t, ctx, pp, task.ID, tok, wire.Progress{Seq: 6, Stage: wire.StageCompleted, Percentage: 100, Message: "done"})
				if res.Task.Status.Status != wire.StatusCompleted {
					t.Fatalf("final report: task %s, want completed", res.Task.Status.Status)
				}
				ending = []string{"stage:completed", "status:completed"}
			}
			if err != nil {
				t.Fatal(err)
			}
			wantKeys := int64(2) // the history and the ending transaction's
			if end == "final report" {
				// The batch completed it; the progress path folds it just
				// after, all of it.
				wantKeys = 1
				for deadline := time.Now().Add(10 * time.Second); eventKeys(t, ctx, s, task.ID) != wantKeys && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
			}
			after := events(t, ctx, s, task.ID)
			if n := eventKeys(t, ctx, s, task.ID); n != wantKeys {
				t.Errorf("%d event keys after the end, want %d", n, wantKeys)
			}
			if len(after) != len(before)+len(ending) || !reflect.DeepEqual(after[:len(before)], before) {
				t.Fatalf("history changed by the fold:\nbefore %+v\nafter  %+v", before, after)
			}
			for i, want := range ending {
				ev := after[len(before)+i]
				if got := ev.Kind + ":" + string(ev.To) + ev.Stage; got != want {
					t.Errorf("ending event %d is %s, want %s", i, got, want)
				}
			}
			// The watch published every event once, as Events reads them;
			// nothing for the fold (its history key, its deletes).
			seen := watchedEvents(t, changes, task.ID, marker(t, ctx, s, "02:00:00:00:0e:"+mac[15:]))
			if !reflect.DeepEqual(seen, after) {
				t.Errorf("watch:\n%+v\nEvents:\n%+v", seen, after)
			}
			if end == "failed" || end == "cancelled" { // a retry, a new attempt, a second end
				if _, err := s.Transition(ctx, task.ID, wire.StatusPending, "retry"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Transition(ctx, task.ID, wire.StatusReady, "again"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Transition(ctx, task.ID, wire.StatusCancelled, "for good"); err != nil {
					t.Fatal(err)
				}
				again := events(t, ctx, s, task.ID)
				if len(again) != len(after)+3 || !reflect.DeepEqual(again[:len(after)], after) {
					t.Fatalf("second fold changed the history:\nbefore %+v\nafter  %+v", after, again)
				}
				if n := eventKeys(t, ctx, s, task.ID); n != 2 {
					t.Errorf("%d event keys after the second end, want 2", n)
				}
				if seen = append(seen, watchedEvents(t, changes, task.ID, marker(t, ctx, s, "02:00:00:00:0d:"+mac[15:]))...); !reflect.DeepEqual(seen, again) {
					t.Errorf("watch after the retry:\n%+v\nEvents:\n%+v", seen, again)
				}
			}
			// The task itself reads as before.
			got, err := s.GetTask(ctx, task.ID)
			if err != nil || got.Status.Status.Active() {
				t.Fatalf("task %+v, %v: want ended", got.Status, err)
			}
		})
	}
}

// A task whose events were written by a release before the fold (one key
// per transaction, some in the decimal layout of before events14) reads
// the same once it ends, and keeps its time order.
func TestHistoryFoldOfOldLayout(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, nil)
	task := walk(t, ctx, s, "02:00:00:00:0f:10", wire.StatusApproved)
	created := task.Spec.CreatedAt
	prefix := "/tasks/" + task.ID + "/events/"
	for i, msg := range []string{"old one", "old two"} { // before events14: decimal stamps, long names
		at := created.Add(time.Duration(i-2) * time.Second)
		val := fmt.Sprintf(`{"kind":"status","to":"pending","message":%q}`, msg)
		if _, err := s.Client().Put(ctx, fmt.Sprintf("%s%020d", prefix, at.UnixNano()), val); err != nil {
			t.Fatal(err)
		}
	}
	before := events(t, ctx, s, task.ID)
	if len(before) != 6 || before[0].Message != "old one" || before[1].Message != "old two" {
		t.Fatalf("events before: %+v", before)
	}
	if _, err := s.Transition(ctx, task.ID, wire.StatusCancelled, "end"); err != nil {
		t.Fatal(err)
	}
	after := events(t, ctx, s, task.ID)
	if len(after) != 7 || !reflect.DeepEqual(after[:6], before) || after[6].To != wire.StatusCancelled {
		t.Fatalf("history changed by the fold:\nbefore %+v\nafter  %+v", before, after)
	}
	if n := eventKeys(t, ctx, s, task.ID); n != 2 {
		t.Errorf("%d event keys, want 2", n)
	}
}

// The history bound drops the oldest events of a folded history, not the
// whole key: a retried task over its limit keeps the newest of its
// history and counts the rest in the dropped record.
func TestHistoryBound(t *testing.T) {
	const limit = 6
	ctx := context.Background()
	s := openStore(t, func(c *store.Config) { c.MaxTaskEvents = limit })
	task := walk(t, ctx, s, "02:00:00:00:0f:11", wire.StatusApproved) // 4 events
	if _, err := s.Fail(ctx, task.ID, "gone", nil); err != nil {      // 5: 4 in the history, 1 key
		t.Fatal(err)
	}
	all := events(t, ctx, s, task.ID)
	for _, to := range []wire.Status{wire.StatusPending, wire.StatusReady} { // 7 > 6
		if _, err := s.Transition(ctx, task.ID, to, "retry"); err != nil {
			t.Fatal(err)
		}
	}
	evs := events(t, ctx, s, task.ID)
	// 7 written, limit 6 with the record: 2 dropped (created, ready),
	// the rest of the history (pending_approval, approved) kept.
	got := ""
	for _, ev := range evs {
		got += fmt.Sprintf("%s:%s:%d ", ev.Kind, ev.To, ev.Dropped)
	}
	want := "dropped::2 status:pending_approval:0 status:approved:0 status:failed:0 status:pending:0 status:ready:0 "
	if got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	if !reflect.DeepEqual(evs[1:4], all[2:5]) {
		t.Errorf("kept history %+v, want %+v", evs[1:4], all[2:5])
	}
}
