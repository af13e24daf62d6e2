package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A task whose events, status and progress were written by the release
// before events14 (decimal event stamps, long field names) reads the same
// after it: old events first, then the new ones, in time order; the
// history bound drops the oldest (old layout first) and still holds when
// writers bound from their own read of the task; the watch decodes every
// new event as Events does (the /ws `event` messages and the API agree).
func TestEventsAcrossLayouts(t *testing.T) {
	const limit = 6
	s := openStore(t, func(c *store.Config) { c.MaxTaskEvents = limit })
	ctx := context.Background()
	cli := s.Client()
	task, err := s.CreateTask(ctx, spec("02:00:00:00:0e:01"))
	if err != nil {
		t.Fatal(err)
	}
	created := task.Spec.CreatedAt
	prefix := "/tasks/" + task.ID + "/events/"
	old := []store.Event{ // written before: store14's form (no "at") and the first one (with it)
		{At: created.Add(-3 * time.Second), Kind: "status", To: wire.StatusPending, Message: "old: created"},
		{At: created.Add(-2 * time.Second), Kind: "stage", Stage: wire.StagePartitioning, Message: "old: stage"},
		{At: created.Add(-time.Second), Kind: "status", From: wire.StatusInstalling, To: wire.StatusFailed, Message: "old: failed"},
	}
	for i, ev := range old {
		val := fmt.Sprintf(`{"kind":%q,"from":%q,"to":%q,"stage":%q,"message":%q}`, ev.Kind, ev.From, ev.To, ev.Stage, ev.Message)
		if i == 2 {
			val = fmt.Sprintf(`{"at":%q,"kind":"status","from":"installing","to":"failed","message":"old: failed"}`, ev.At.Format(time.RFC3339Nano))
		}
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%020d", prefix, ev.At.UnixNano()), val); err != nil {
			t.Fatal(err)
		}
	}
	// The status as the release before wrote it.
	put, err := cli.Put(ctx, "/tasks/"+task.ID+"/status",
		fmt.Sprintf(`{"status":"pending","updated_at":%q,"attempt":1}`, created.Format(time.RFC3339Nano)))
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || evs[3].Message != "task created" {
		t.Fatalf("events %+v: want the 3 old ones then task created", evs)
	}
	for i, ev := range old {
		if evs[i] != ev {
			t.Errorf("old event %d read as %+v, want %+v", i, evs[i], ev)
		}
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := s.Watch(wctx, put.Header.Revision+1)
	var want []store.Event
	for _, to := range []wire.Status{wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved} {
		if _, err := s.Transition(ctx, task.ID, to, "to "+string(to)); err != nil {
			t.Fatalf("to %s: %v", to, err)
		}
	}
	for i, stage := range []string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling} {
		if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: int64(i + 1), Stage: stage, Percentage: []int{0, 10, 60}[i], Message: "m " + stage}); err != nil {
			t.Fatalf("progress %s: %v", stage, err)
		}
	}
	evs, err = s.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	// 4 + 3 transitions + installing + 3 stages = 11 written; 6 kept, the
	// first the record of 11 - 5 = 6 dropped (the 3 old ones first).
	if len(evs) != limit || evs[0].Kind != store.EventKindDropped || evs[0].Dropped != 6 {
		t.Fatalf("%d events, first %+v: want %d, the first the record of 6 dropped", len(evs), evs[0], limit)
	}
	wantKinds := []string{"status:approved", "status:installing", "stage:" + wire.StagePartitioning, "stage:" + wire.StageDownloading, "stage:" + wire.StageInstalling}
	for i, ev := range evs[1:] {
		if got := ev.Kind + ":" + string(ev.To) + ev.Stage; got != wantKinds[i] {
			t.Errorf("event %d is %s (%+v), want %s", i+1, got, ev, wantKinds[i])
		}
		if i > 0 && !ev.At.After(evs[i].At) {
			t.Errorf("events out of order at %d", i+1)
		}
	}
	want = evs[1:]
	st, err := s.GetTask(ctx, task.ID)
	if err != nil || st.Status.Status != wire.StatusInstalling || st.Status.Attempt != 1 || st.Progress == nil || st.Progress.Stage != wire.StageInstalling {
		t.Fatalf("task %+v, %v", st, err)
	}
	// The watch saw each new event with the content Events reads.
	seen := map[time.Time]store.Event{}
	deadline := time.After(10 * time.Second)
	for len(seen) < 7 {
		select {
		case c := <-changes:
			if c.Kind == store.KindEvent && c.Event.Kind != store.EventKindDropped {
				seen[c.Event.At] = *c.Event
			}
		case <-deadline:
			t.Fatalf("watch saw %d events, want 7", len(seen))
		}
	}
	for _, ev := range want {
		if got, ok := seen[ev.At]; !ok || got != ev {
			t.Errorf("watch saw %+v (%v), Events reads %+v", got, ok, ev)
		}
	}
}

// One transaction's events share one key: the API reads them in time
// order as before, watchers get one change each in the order the
// transaction wrote them (as when each had its own key), and the history
// bound counts events, dropping a shared key whole.
func TestEventsOfOneTransaction(t *testing.T) {
	const limit = 4
	s := openStore(t, func(c *store.Config) { c.MaxTaskEvents = limit })
	ctx := context.Background()
	task := walk(t, ctx, s, "02:00:00:00:0e:02", wire.StatusApproved) // 4 events, 4 keys
	changes := s.Watch(ctx, task.Revision+1)
	if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Message: "parting"}); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Client().Get(ctx, "/tasks/"+task.ID+"/events/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	// 6 events written, limit 4: the record, approved, then the pair;
	// created, ready and pending_approval (3) dropped; 3 keys.
	got := ""
	for _, ev := range evs {
		got += fmt.Sprintf("%s:%s%s:%d ", ev.Kind, ev.To, ev.Stage, ev.Dropped)
	}
	if want := "dropped::3 status:approved:0 status:installing:0 stage:partitioning:0 "; got != want || keys.Count != 3 {
		t.Fatalf("events %s (%d keys), want %s (3 keys)", got, keys.Count, want)
	}
	if !evs[2].At.Before(evs[3].At) {
		t.Errorf("status change at %v not before the stage at %v", evs[2].At, evs[3].At)
	}
	var seen []string
	deadline := time.After(10 * time.Second)
	for len(seen) < 2 {
		select {
		case c := <-changes:
			if c.Kind == store.KindEvent && c.Event.Kind != store.EventKindDropped {
				seen = append(seen, c.Event.Kind)
				if e := evs[len(evs)-len(seen)]; *c.Event != e { // stage first, then status
					t.Errorf("watch: %+v, Events: %+v", *c.Event, e)
				}
			}
		case <-deadline:
			t.Fatalf("watch saw %v", seen)
		}
	}
	// A failure with its log: the status change and the error share a
	// key; the shared key of before goes whole.
	if _, err := s.Fail(ctx, task.ID, "disk gone", []string{"log line"}); err != nil {
		t.Fatal(err)
	}
	evs, err = s.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	got = ""
	for _, ev := range evs {
		got += fmt.Sprintf("%s:%s:%d ", ev.Kind, ev.To, ev.Dropped)
	}
	if want := "dropped::6 status:failed:0 error::0 "; got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}
