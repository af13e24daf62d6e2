package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

func startHub(t *testing.T, st *store.Store, cfg ui.HubConfig) *ui.Hub {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	h := ui.NewHub(st, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func next(t *testing.T, sub *ui.Subscription) wsMsg {
	t.Helper()
	select {
	case b := <-sub.C:
		var m wsMsg
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return wsMsg{}
}

// nextOf skips messages until one of type typ (and task id, if given).
func nextOf(t *testing.T, sub *ui.Subscription, typ, id string) wsMsg {
	t.Helper()
	for range 100 {
		m := next(t, sub)
		if m.Type == typ && (id == "" || m.TaskID == id) {
			return m
		}
	}
	t.Fatalf("no %s message", typ)
	return wsMsg{}
}

func TestHubSnapshotThenChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	before, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:00:01", OSType: "ubuntu", OSVersion: "22.04", Hostname: "before"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RecordMachine(ctx, "dc1", "52:54:00:00:00:99", nil); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, st, ui.HubConfig{})
	sub, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(sub)

	snap := next(t, sub)
	if snap.Type != ui.MsgSnapshot || len(snap.Tasks) != 1 || snap.Tasks[0].ID != before.ID || snap.Tasks[0].Spec.Hostname != "before" {
		t.Fatalf("first message is not the snapshot with the task: %+v", snap)
	}
	if len(snap.Machines) != 1 || snap.Machines[0].MAC != "52:54:00:00:00:99" || snap.Revision == 0 {
		t.Fatalf("snapshot machines/revision: %+v", snap)
	}

	// A task created now arrives once, complete (spec and status).
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:00:02", OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	m := next(t, sub)
	if m.Type != ui.MsgTask || m.TaskID != task.ID || m.Task == nil || m.Task.Status.Status != wire.StatusPending || m.Task.Spec.TargetMAC != "52:54:00:00:00:02" {
		t.Fatalf("want the new task, got %+v", m)
	}
	if m.Revision <= snap.Revision {
		t.Fatalf("revision %d not after snapshot %d", m.Revision, snap.Revision)
	}
	if ev := nextOf(t, sub, ui.MsgEvent, task.ID); ev.Event == nil || ev.Event.To != wire.StatusPending {
		t.Fatalf("creation event: %+v", ev)
	}

	if _, err := st.ClaimTask(ctx, task.ID, "tok"); err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, sub, ui.MsgStatus, task.ID); m.Status != wire.StatusReady {
		t.Fatalf("status: %+v", m)
	}
	if _, err := st.SetHardware(ctx, task.ID, sampleHardware("node-2")); err != nil {
		t.Fatal(err)
	}
	// Hardware and the move to pending_approval are one transaction.
	var gotHW, gotStatus bool
	for !gotHW || !gotStatus {
		m := next(t, sub)
		switch m.Type {
		case ui.MsgHardware:
			// The hub sends the report's summary (hostname, DMI identity);
			// the detail view reads the rest from the REST API.
			gotHW = m.Hardware != nil && m.Hardware.Hostname == "node-2" && m.Hardware.DMI.Product == "AS-1114S-WN10RT" &&
				m.Hardware.DMI.Serial == "A123" && m.Hardware.CPU.Cores == 0 && len(m.Hardware.Disks) == 0
		case ui.MsgStatus:
			gotStatus = m.Status == wire.StatusPendingApproval
		}
	}
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "ok"); err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, sub, ui.MsgStatus, task.ID); m.Status != wire.StatusApproved {
		t.Fatalf("status: %+v", m)
	}
	for seq := int64(1); seq <= 5; seq++ {
		if _, err := st.ReportProgress(ctx, task.ID, wire.Progress{Seq: seq, Stage: wire.StageDownloading, Percentage: 20 + int(seq)*5,
			Message: fmt.Sprintf("chunk %d", seq), BytesDone: seq << 20, BytesTotal: 5 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	// A client that was not reading gets the latest progress, coalesced:
	// in order, ending with the last report.
	for last := int64(0); last < 5; {
		m := nextOf(t, sub, ui.MsgProgress, task.ID)
		seq := m.Seq
		if seq <= last || m.Percentage != 20+int(seq)*5 || m.Stage != wire.StageDownloading || m.BytesDone != seq<<20 || m.BytesTotal != 5<<20 || m.Message != fmt.Sprintf("chunk %d", seq) {
			t.Fatalf("progress after seq %d: %+v", last, m)
		}
		last = seq
	}

	// A client subscribing now sees all of that in its snapshot.
	late, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(late)
	s2 := next(t, late)
	var found bool
	for _, tk := range s2.Tasks {
		if tk.ID == task.ID {
			found = tk.Status.Status == wire.StatusInstalling && tk.Progress != nil && tk.Progress.Seq == 5 && tk.Hardware != nil
		}
	}
	if s2.Type != ui.MsgSnapshot || len(s2.Tasks) != 2 || !found {
		t.Fatalf("late snapshot: %+v", s2)
	}
}

// TestHubSlowClientGetsLatestStateNoDrop: three clients read as fast as
// they can while a fourth reads nothing as 40 progress reports and a
// status change are written. Every client sees progress in order ending
// with the last report; the slow one is not dropped and, once it reads,
// receives fewer, fresher messages: the latest progress and the status.
// One falling more than QueueLen other messages (and more bytes than a
// snapshot) behind is resynced from a snapshot instead.
func TestHubSlowClientGetsLatestStateNoDrop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	task := walkToApproved(t, ctx, st, "52:54:00:00:01:01")
	h := startHub(t, st, ui.HubConfig{QueueLen: 8, QueueBytes: 1})

	var fast []*ui.Subscription
	for range 3 {
		s, err := h.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Unsubscribe(s)
		fast = append(fast, s)
	}
	slow, err := h.Subscribe(ctx) // reads nothing until the end
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(slow)
	if m := next(t, slow); m.Type != ui.MsgSnapshot {
		t.Fatalf("first message %+v", m)
	}

	const n = 40
	type result struct {
		seqs []int64
		err  error
	}
	results := make(chan result, len(fast))
	for _, s := range fast {
		go func() {
			var r result
			deadline := time.After(20 * time.Second)
			for len(r.seqs) == 0 || r.seqs[len(r.seqs)-1] < n {
				select {
				case b := <-s.C:
					var m wsMsg
					if err := json.Unmarshal(b, &m); err != nil {
						r.err = err
						results <- r
						return
					}
					if m.Type == ui.MsgProgress {
						r.seqs = append(r.seqs, m.Seq)
					}
				case <-s.Done():
					r.err = fmt.Errorf("fast client dropped after %d", len(r.seqs))
					results <- r
					return
				case <-deadline:
					r.err = fmt.Errorf("timeout after %v", r.seqs)
					results <- r
					return
				}
			}
			results <- r
		}()
	}
	for seq := int64(1); seq <= n; seq++ {
		if _, err := st.ReportProgress(ctx, task.ID, wire.Progress{Seq: seq, Stage: wire.StageInstalling, Percentage: 60 + int(seq)/2}); err != nil {
			t.Fatal(err)
		}
	}
	for range fast {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		for i := 1; i < len(r.seqs); i++ {
			if r.seqs[i] <= r.seqs[i-1] {
				t.Fatalf("fast client got progress out of order: %v", r.seqs)
			}
		}
	}
	// Wait until the hub has applied everything, then let the slow client read.
	waitRev := func() {
		_, rev, err := st.GetTaskRev(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		for h.Stats().Revision < rev {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRev()
	var got []wsMsg
	for {
		select {
		case b := <-slow.C:
			var m wsMsg
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
			continue
		case <-slow.Done():
			t.Fatal("slow client dropped")
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	var progress []int64
	for _, m := range got {
		if m.Type == ui.MsgProgress {
			progress = append(progress, m.Seq)
		}
	}
	// The first report came with the move to installing (its status
	// message keeps it in place); the other 39 collapse into the latest.
	if len(progress) != 2 || progress[0] != 1 || progress[1] != n {
		t.Fatalf("slow client got progress %v, want [1 %d]; all: %+v", progress, n, got)
	}
	// Status changes always arrive.
	if _, err := st.Transition(ctx, task.ID, wire.StatusCompleted, "done"); err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, slow, ui.MsgStatus, task.ID); m.Status != wire.StatusCompleted {
		t.Fatalf("status %+v", m)
	}
	if stats := h.Stats(); stats.Dropped != 0 || stats.Resyncs != 0 || stats.Clients != 4 {
		t.Fatalf("stats: %+v", stats)
	}

	// More than QueueLen (8) other messages, and more bytes than a
	// snapshot, behind: resynced, not dropped. (Events are not part of a
	// snapshot: the detail view reads them on demand.)
	long := strings.Repeat("x", 4096)
	for i := range 12 {
		if err := st.AddPowerEvent(ctx, task.ID, fmt.Sprintf("event %d %s", i, long)); err != nil {
			t.Fatal(err)
		}
	}
	waitRev2 := func() bool { return h.Stats().Resyncs >= 1 }
	for deadline := time.Now().Add(5 * time.Second); !waitRev2(); {
		if time.Now().After(deadline) {
			t.Fatalf("no resync: %+v", h.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	snap := nextOf(t, slow, ui.MsgSnapshot, "")
	if !snap.Resync || len(snap.Tasks) != 1 || snap.Tasks[0].Progress == nil || snap.Tasks[0].Progress.Seq != n || snap.Tasks[0].Status.Status != wire.StatusCompleted {
		t.Fatalf("resync snapshot: %+v", snap)
	}
}

// Two members of one etcd cluster: a change written through one shows on
// the other's hub, because the hub watches etcd, not memory.
func TestHubSeesOtherProcessWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, other := twoStores(t)
	h := startHub(t, st, ui.HubConfig{})
	sub, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(sub)
	next(t, sub) // snapshot
	task, err := other.CreateTask(ctx, store.Spec{RegionID: "dc2", TargetMAC: "52:54:00:00:02:01", OSType: "debian", OSVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, sub, ui.MsgTask, task.ID); m.Task.Spec.RegionID != "dc2" {
		t.Fatalf("task from the other process: %+v", m)
	}
}

// twoStores starts an embedded etcd member and a second store connected to
// it as a client: two lpmos processes sharing one cluster.
func twoStores(t testing.TB) (*store.Store, *store.Store) {
	t.Helper()
	cfg := storetest.Config(t, t.TempDir())
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	other, err := store.Open(context.Background(), storetest.ClientOf(cfg)) // mutual TLS with the member's certificate
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(); _ = st.Close() })
	return st, other
}
