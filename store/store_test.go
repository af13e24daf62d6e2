package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func spec(mac string) store.Spec {
	return store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04"}
}

// walk drives a new task to status `to` along the happy path.
func walk(t testing.TB, ctx context.Context, s *store.Store, mac string, to wire.Status) store.Task {
	t.Helper()
	task, err := s.CreateTask(ctx, spec(mac))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	path := map[wire.Status][]wire.Status{
		wire.StatusPending:         nil,
		wire.StatusReady:           {wire.StatusReady},
		wire.StatusPendingApproval: {wire.StatusReady, wire.StatusPendingApproval},
		wire.StatusApproved:        {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved},
		wire.StatusInstalling:      {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling},
		wire.StatusStalled:         {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled},
		wire.StatusCompleted:       {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusCompleted},
		wire.StatusFailed:          {wire.StatusFailed},
		wire.StatusCancelled:       {wire.StatusCancelled},
	}
	for _, st := range path[to] {
		if task, err = s.Transition(ctx, task.ID, st, "test"); err != nil {
			t.Fatalf("walk to %s: %v", st, err)
		}
	}
	return task
}

func TestStateMachineEveryPair(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	n := 0
	for _, from := range wire.AllStatuses {
		for _, to := range wire.AllStatuses {
			n++
			mac := fmt.Sprintf("02:00:00:00:%02x:%02x", n/256, n%256)
			task := walk(t, ctx, s, mac, from)
			got, err := s.Transition(ctx, task.ID, to, "probe")
			want := store.CanTransition(from, to)
			if want {
				if err != nil {
					t.Errorf("%s -> %s: want allowed, got %v", from, to, err)
					continue
				}
				if got.Status.Status != to {
					t.Errorf("%s -> %s: status is %s", from, to, got.Status.Status)
				}
				reread, _ := s.GetTask(ctx, task.ID)
				if reread.Status.Status != to {
					t.Errorf("%s -> %s: stored status is %s", from, to, reread.Status.Status)
				}
				continue
			}
			var te *store.TransitionError
			if !errors.As(err, &te) || !errors.Is(err, store.ErrConflict) || te.From != from {
				t.Errorf("%s -> %s: want TransitionError from %s, got %v", from, to, from, err)
			}
			reread, _ := s.GetTask(ctx, task.ID)
			if reread.Status.Status != from {
				t.Errorf("%s -> %s refused but status changed to %s", from, to, reread.Status.Status)
			}
		}
	}
}

func TestStateMachineTable(t *testing.T) {
	t.Parallel()
	// The allowed set, written out once more by hand: a change to the
	// machine must be deliberate.
	allowed := map[[2]wire.Status]bool{}
	for _, p := range [][2]wire.Status{
		{"pending", "ready"}, {"ready", "pending_approval"}, {"pending_approval", "approved"},
		{"approved", "installing"}, {"installing", "completed"}, {"installing", "stalled"},
		{"stalled", "installing"}, {"stalled", "completed"},
		{"failed", "pending"}, {"cancelled", "pending"},
	} {
		allowed[p] = true
	}
	for _, from := range wire.AllStatuses {
		if from.Active() {
			allowed[[2]wire.Status{from, "failed"}] = true
			allowed[[2]wire.Status{from, "cancelled"}] = true
		}
	}
	for _, from := range wire.AllStatuses {
		for _, to := range wire.AllStatuses {
			if got, want := store.CanTransition(from, to), allowed[[2]wire.Status{from, to}]; got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
}

func TestConcurrentApproveOneWins(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	for round := range 5 {
		task := walk(t, ctx, s, fmt.Sprintf("02:00:00:00:01:%02x", round), wire.StatusPendingApproval)
		const n = 8
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Transition(ctx, task.ID, wire.StatusApproved, "operator")
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		wins := 0
		for err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrConflict):
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d approvals won, want exactly 1", round, wins)
		}
		evs, _ := s.Events(ctx, task.ID)
		approvals := 0
		for _, ev := range evs {
			if ev.To == wire.StatusApproved {
				approvals++
			}
		}
		if approvals != 1 {
			t.Fatalf("round %d: %d approval events", round, approvals)
		}
	}
}

func TestMACIndex(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	first, err := s.CreateTask(ctx, spec("00-1A-2B-3C-4D-5E"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Spec.TargetMAC != "00:1a:2b:3c:4d:5e" {
		t.Fatalf("MAC not canonical: %s", first.Spec.TargetMAC)
	}
	if _, err := s.CreateTask(ctx, spec("00:1a:2b:3c:4d:5e")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second active task: want conflict, got %v", err)
	}
	byMAC, err := s.TaskByMAC(ctx, "00:1A:2B:3C:4D:5E")
	if err != nil || byMAC.ID != first.ID {
		t.Fatalf("TaskByMAC = %v, %v; want %s", byMAC.ID, err, first.ID)
	}
	// Once the task ends, the MAC is free again, and the ended task cannot
	// be retried while the new one is active.
	if _, err := s.Transition(ctx, first.ID, wire.StatusCancelled, "operator"); err != nil {
		t.Fatal(err)
	}
	second, err := s.CreateTask(ctx, spec("00:1a:2b:3c:4d:5e"))
	if err != nil {
		t.Fatalf("create after cancel: %v", err)
	}
	if _, err := s.Transition(ctx, first.ID, wire.StatusPending, "retry"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("retry while MAC busy: want conflict, got %v", err)
	}
	if byMAC, _ := s.TaskByMAC(ctx, "00:1a:2b:3c:4d:5e"); byMAC.ID != second.ID {
		t.Fatalf("index points at %s, want %s", byMAC.ID, second.ID)
	}

	// Concurrent creates for one fresh MAC: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.CreateTask(ctx, spec("02:aa:bb:cc:dd:ee")); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, store.ErrConflict) {
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent creates won, want 1", wins)
	}
}

func TestSpecValidation(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mut  func(*store.Spec)
	}{
		{"missing region", func(sp *store.Spec) { sp.RegionID = "" }},
		{"missing os", func(sp *store.Spec) { sp.OSType = "" }},
		{"bad mac", func(sp *store.Spec) { sp.TargetMAC = "00:1a:2b" }},
		{"mac junk", func(sp *store.Spec) { sp.TargetMAC = "zz:1a:2b:3c:4d:5e" }},
		{"hostname markup", func(sp *store.Spec) { sp.Hostname = "<img src=x>" }},
		{"os with slash", func(sp *store.Spec) { sp.OSVersion = "../22" }},
		{"ssh key with newline", func(sp *store.Spec) { sp.SSHAuthorizedKeys = []string{"ssh-ed25519 AAA\nrm -rf"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := spec("02:00:00:00:09:01")
			tc.mut(&sp)
			if _, err := s.CreateTask(ctx, sp); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("want ErrInvalid, got %v", err)
			}
		})
	}
	tasks, _, err := s.ListTasks(ctx, store.Filter{})
	if err != nil || len(tasks) != 0 {
		t.Fatalf("invalid specs wrote %d tasks (%v)", len(tasks), err)
	}
}

func TestProgressMonotonic(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task := walk(t, ctx, s, "02:00:00:00:02:01", wire.StatusPendingApproval)
	if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: "partitioning"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("progress before approval: want conflict, got %v", err)
	}
	if _, err := s.Transition(ctx, task.ID, wire.StatusApproved, ""); err != nil {
		t.Fatal(err)
	}
	r, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: "partitioning", Percentage: 5})
	if err != nil || r.Task.Status.Status != wire.StatusInstalling {
		t.Fatalf("first progress: %v, status %s", err, r.Task.Status.Status)
	}
	if r, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: "partitioning", Percentage: 5}); err != nil || !r.Duplicate {
		t.Fatalf("duplicate: %v dup=%v", err, r.Duplicate)
	}
	if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 3, Stage: "downloading", Percentage: 30}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 2, Stage: "partitioning", Percentage: 10}); !errors.Is(err, store.ErrRegression) {
		t.Fatalf("regression: want ErrRegression, got %v", err)
	}
	got, _ := s.GetTask(ctx, task.ID)
	if got.Progress == nil || got.Progress.Seq != 3 || got.Progress.Percentage != 30 {
		t.Fatalf("stored progress = %+v", got.Progress)
	}
	// Stalled returns to installing when the agent speaks again.
	if _, err := s.Transition(ctx, task.ID, wire.StatusStalled, "no report"); err != nil {
		t.Fatal(err)
	}
	if r, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 4, Stage: "downloading", Percentage: 40}); err != nil || r.Task.Status.Status != wire.StatusInstalling {
		t.Fatalf("after stall: %v %s", err, r.Task.Status.Status)
	}
	// A retry starts a new attempt: seq starts over.
	if _, err := s.Fail(ctx, task.ID, "disk error", []string{"line 1", "line 2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, task.ID, wire.StatusPending, "retry"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetTask(ctx, task.ID)
	if got.Status.Attempt != 2 || got.Progress != nil || got.Hardware != nil {
		t.Fatalf("after retry: attempt %d progress %+v", got.Status.Attempt, got.Progress)
	}
}

func TestWatchSeesEveryChange(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, rev, err := s.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	// Changes made before the watch starts are still delivered from rev+1.
	task := walk(t, ctx, s, "02:00:00:00:04:01", wire.StatusApproved)
	if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: "partitioning", Percentage: 10}); err != nil {
		t.Fatal(err)
	}
	ch := s.Watch(ctx, rev+1)
	var statuses []wire.Status
	sawCreate, sawProgress := false, false
	for len(statuses) < 4 || !sawProgress {
		select {
		case c := <-ch:
			if c.TaskID != task.ID {
				continue
			}
			switch c.Kind {
			case store.KindTaskCreated:
				sawCreate = true
			case store.KindStatus:
				statuses = append(statuses, c.Status.Status)
			case store.KindProgress:
				sawProgress = c.Progress.Percentage == 10
			}
		case <-ctx.Done():
			t.Fatalf("watch: saw create=%v statuses=%v progress=%v", sawCreate, statuses, sawProgress)
		}
	}
	want := []wire.Status{"pending", "ready", "pending_approval", "approved"}
	if !sawCreate || fmt.Sprint(statuses[:4]) != fmt.Sprint(want) {
		t.Fatalf("create=%v statuses=%v want %v", sawCreate, statuses, want)
	}
}

// TestWatchStoredKinds: a watch asked for some kinds of change sends
// those and nothing else (it does not decode the others), in order, and
// the same ones an unfiltered watch sends.
func TestWatchStoredKinds(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, rev, err := s.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	task := walk(t, ctx, s, "02:00:00:00:04:02", wire.StatusApproved)
	if _, err := s.ReportProgress(ctx, task.ID, wire.Progress{Seq: 1, Stage: "partitioning", Percentage: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, task.ID, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteTask(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	// What an unfiltered watch sends of the task, up to its deletion.
	collect := func(ch <-chan store.Change) []string {
		var got []string
		for {
			select {
			case c := <-ch:
				if c.TaskID != task.ID {
					continue
				}
				got = append(got, string(c.Kind))
				if c.Kind == store.KindTaskDeleted {
					return got
				}
			case <-ctx.Done():
				t.Fatalf("watch: saw %v, not the deletion", got)
			}
		}
	}
	all := collect(s.WatchStored(ctx, rev+1))
	want := map[string]bool{string(store.KindTaskCreated): true, string(store.KindStatus): true, string(store.KindTaskDeleted): true}
	var wantSeq []string
	kinds := map[string]bool{}
	for _, k := range all {
		kinds[k] = true
		if want[k] {
			wantSeq = append(wantSeq, k)
		}
	}
	if !kinds[string(store.KindEvent)] || !kinds[string(store.KindProgress)] {
		t.Fatalf("unfiltered watch sent %v: want events and progress too", all)
	}
	got := collect(s.WatchStored(ctx, rev+1, store.KindTaskCreated, store.KindStatus, store.KindTaskDeleted))
	if fmt.Sprint(got) != fmt.Sprint(wantSeq) {
		t.Fatalf("filtered watch sent %v, want %v (of %v)", got, wantSeq, all)
	}
}

func TestRestartKeepsTasks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := storetest.Config(t, dir)
	ctx := context.Background()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 20 {
		task, err := s.CreateTask(ctx, spec(fmt.Sprintf("02:00:00:00:05:%02x", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	if _, err := s.Transition(ctx, ids[0], wire.StatusReady, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	tasks, _, err := s.ListTasks(ctx, store.Filter{})
	if err != nil || len(tasks) != 20 {
		t.Fatalf("after restart: %d tasks, %v", len(tasks), err)
	}
	got, _ := s.GetTask(ctx, ids[0])
	if got.Status.Status != wire.StatusReady {
		t.Fatalf("status after restart = %s", got.Status.Status)
	}
	if _, err := s.CreateTask(ctx, spec("02:00:00:00:05:00")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("MAC index lost in restart: %v", err)
	}
}

func TestListFiltersAndNotFound(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	walk(t, ctx, s, "02:00:00:00:06:01", wire.StatusReady)
	walk(t, ctx, s, "02:00:00:00:06:02", wire.StatusPending)
	sp := spec("02:00:00:00:06:03")
	sp.RegionID = "dc2"
	if _, err := s.CreateTask(ctx, sp); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    store.Filter
		want int
	}{{store.Filter{}, 3}, {store.Filter{Status: "pending"}, 2}, {store.Filter{Region: "dc2"}, 1}, {store.Filter{Status: "ready", Region: "dc1"}, 1}, {store.Filter{Status: "completed"}, 0}} {
		got, _, err := s.ListTasks(ctx, tc.f)
		if err != nil || len(got) != tc.want {
			t.Errorf("ListTasks(%+v) = %d, %v; want %d", tc.f, len(got), err, tc.want)
		}
	}
	if _, err := s.GetTask(ctx, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := s.Transition(ctx, "00000000-0000-4000-8000-000000000000", wire.StatusApproved, ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("transition unknown id: %v", err)
	}
}

func TestAdminToken(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	tok, created, err := s.EnsureAdminToken(ctx)
	if err != nil || !created || tok == "" {
		t.Fatalf("EnsureAdminToken: %q %v %v", tok, created, err)
	}
	if _, again, _ := s.EnsureAdminToken(ctx); again {
		t.Fatal("second EnsureAdminToken created another token")
	}
	for _, tc := range []struct {
		tok  string
		want bool
	}{{tok, true}, {"", false}, {tok + "x", false}, {store.NewSecret(), false}} {
		if ok, err := s.CheckAdminToken(ctx, tc.tok); err != nil || ok != tc.want {
			t.Errorf("CheckAdminToken(%.8q) = %v, %v", tc.tok, ok, err)
		}
	}
	// Only the hash is stored.
	resp, _ := s.Client().Get(ctx, "/auth/", clientv3.WithPrefix())
	for _, kv := range resp.Kvs {
		if string(kv.Value) == tok {
			t.Fatal("admin token stored in plain text")
		}
	}
}
