package ui

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// When the etcd watch must restart (history compacted under it), the hub
// reloads a snapshot and sends it to every connected client, so changes
// the broken watch never delivered are not lost.
func TestHubResyncOnWatchRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	h := NewHub(st, HubConfig{Logger: slog.New(slog.DiscardHandler), Retry: time.Millisecond})
	restart := make(chan struct{})
	watches := make(chan int64, 4)
	h.watch = func(ctx context.Context, from int64) <-chan store.Change {
		watches <- from
		if len(watches) > 1 { // second watch onwards: the real one
			return st.Watch(ctx, from)
		}
		// First watch: delivers nothing, then reports a restart, like a
		// watch whose history was compacted away.
		out := make(chan store.Change, 1)
		go func() {
			defer close(out)
			select {
			case <-restart:
				out <- store.Change{Kind: store.KindWatchRestart}
			case <-ctx.Done():
			}
		}()
		return out
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(rctx) }()
	defer func() { cancel(); <-done }()

	sub, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(sub)
	first := decodeSnap(t, sub)
	if len(first.Tasks) != 0 {
		t.Fatalf("first snapshot: %+v", first)
	}
	// Written while the watch is deaf: only a resync can bring it.
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:03:01", OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	close(restart)
	second := decodeSnap(t, sub)
	if len(second.Tasks) != 1 || second.Tasks[0].ID != task.ID || second.Revision <= first.Revision {
		t.Fatalf("resync snapshot: %+v", second)
	}
	// And the new watch continues from the new snapshot's revision.
	if _, err := st.ClaimTask(ctx, task.ID, "tok"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case b := <-sub.C:
			var m StatusMessage
			_ = json.Unmarshal(b, &m)
			if m.Type == MsgStatus && m.TaskID == task.ID && m.Status == wire.StatusReady {
				if from := <-watches; from != first.Revision+1 {
					t.Fatalf("first watch from %d, want %d", from, first.Revision+1)
				}
				if from := <-watches; from != second.Revision+1 {
					t.Fatalf("second watch from %d, want %d", from, second.Revision+1)
				}
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no status after resync")
		}
	}
}

func decodeSnap(t *testing.T, sub *Subscription) Snapshot {
	t.Helper()
	select {
	case b := <-sub.C:
		var s Snapshot
		if err := json.Unmarshal(b, &s); err != nil || s.Type != MsgSnapshot {
			t.Fatalf("want a snapshot, got %s (%v)", b, err)
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot")
	}
	return Snapshot{}
}

// The same with etcd's real compaction: the hub's watch starts from a
// revision compacted away meanwhile (as after a lost leader, or a watch
// that fell behind the retention), store.Watch reports it, and every
// client gets a fresh snapshot with what the watch missed.
func TestHubResyncAfterRealCompaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	h := NewHub(st, HubConfig{Logger: slog.New(slog.DiscardHandler), Retry: time.Millisecond})
	release := make(chan struct{})
	calls := 0
	h.watch = func(ctx context.Context, from int64) <-chan store.Change {
		calls++
		if calls == 1 {
			select { // the first watch starts late: after the compaction
			case <-release:
			case <-ctx.Done():
			}
		}
		return st.Watch(ctx, from)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(rctx) }()
	defer func() { cancel(); <-done }()

	sub, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(sub)
	first := decodeSnap(t, sub)
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:03:02", OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	// Compact past the task's creation: the revision the watch starts from
	// (first.Revision+1 <= task.Revision) is gone.
	bump, err := st.Client().Put(ctx, "/test/bump", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client().Compact(ctx, bump.Header.Revision); err != nil {
		t.Fatal(err)
	}
	release <- struct{}{}
	second := decodeSnap(t, sub)
	if len(second.Tasks) != 1 || second.Tasks[0].ID != task.ID || second.Revision <= first.Revision {
		t.Fatalf("resync snapshot after compaction: %+v (first at %d)", second, first.Revision)
	}
	// Live again: the next change arrives as a message.
	if _, err := st.ClaimTask(ctx, task.ID, "tok"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case b := <-sub.C:
			var m StatusMessage
			_ = json.Unmarshal(b, &m)
			if m.Type == MsgStatus && m.TaskID == task.ID && m.Status == wire.StatusReady {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no status after the resync")
		}
	}
}

// The hub's copy of a task's progress keeps what the dashboard shows and
// the task id (the API's task says it too), and drops the partition
// table and the agent's MAC echo.
func TestCompactTaskProgress(t *testing.T) {
	t.Parallel()
	full := store.Task{ID: "t1", Progress: &wire.Progress{TaskID: "t1", MACAddress: "52:54:00:00:00:01", Seq: 7,
		Stage: wire.StageConfiguring, Percentage: 100, Message: "seed written", Attempt: 2, Run: 1,
		Partitions: []wire.Partition{{Number: 1}}}}
	got := compactTask(full).Progress
	if got == nil {
		t.Fatal("progress dropped")
	}
	want := *full.Progress
	want.Partitions, want.MACAddress = nil, ""
	if g, _ := json.Marshal(got); string(g) != string(mustJSON(t, want)) {
		t.Errorf("compact progress %s, want %s", g, mustJSON(t, want))
	}
	if full.Progress.MACAddress == "" || len(full.Progress.Partitions) != 1 {
		t.Error("compactTask changed the task it copied")
	}
	if compactTask(store.Task{ID: "t2"}).Progress != nil {
		t.Error("a task without progress got one")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
