package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// agentSession walks a new task to approved and opens its agent session.
func agentSession(t testing.TB, ctx context.Context, s *store.Store, mac string) (store.Task, string) {
	t.Helper()
	task := walk(t, ctx, s, mac, wire.StatusPendingApproval)
	boot, err := s.IssueBootToken(ctx, task.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := s.RedeemBootToken(ctx, task.ID, boot, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if task, err = s.Transition(ctx, task.ID, wire.StatusApproved, "test"); err != nil {
		t.Fatal(err)
	}
	return task, sess
}

// reportCached sends p through pp, waiting (briefly) for the cache to see
// the task's latest state: ErrNotCached right after a change made
// elsewhere only means the watch has not delivered it yet.
func reportCached(t *testing.T, ctx context.Context, pp *store.ProgressPath, id, tok string, p wire.Progress) store.ProgressResult {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := pp.Report(ctx, id, tok, "", p)
		if err == nil {
			return res
		}
		if !errors.Is(err, store.ErrNotCached) || time.Now().After(deadline) {
			t.Fatalf("report %s %d%% (seq %d): %v", p.Stage, p.Percentage, p.Seq, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestProgressPathCoalescesInOrder sends a whole install's reports as
// fast as the path answers them, with an operator-side stall in the
// middle, and checks what etcd recorded (through the watch): progress
// writes in seq order, fewer writes than reports, every stage and every
// status change written, and the final report stored.
func TestProgressPathCoalescesInOrder(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task, tok := agentSession(t, ctx, s, "02:00:00:00:0c:01")
	pp := storetest.RunProgressPath(t, s, 300*time.Millisecond, 0)
	_, rev, err := s.GetTaskRev(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	changes := s.Watch(wctx, rev+1)

	type rep struct {
		stage string
		pct   int
	}
	var plan []rep
	for pct := 0; pct <= 20; pct += 5 {
		plan = append(plan, rep{wire.StagePartitioning, pct})
	}
	for pct := 20; pct <= 60; pct++ {
		plan = append(plan, rep{wire.StageDownloading, pct})
	}
	for pct := 60; pct <= 90; pct += 3 {
		plan = append(plan, rep{wire.StageInstalling, pct})
	}
	for pct := 90; pct <= 100; pct += 2 {
		plan = append(plan, rep{wire.StageConfiguring, pct})
	}
	plan = append(plan, rep{wire.StageCompleted, 100})
	stalledAt := len(plan) / 2
	for i, r := range plan {
		if i == stalledAt {
			// The stall detector fires between two reports of a stage; the
			// next report must move the task back to installing. (It
			// reads what is stored: the accepted changes are written.)
			if err := pp.WaitWritten(ctx, task.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Transition(ctx, task.ID, wire.StatusStalled, "test: stalled"); err != nil {
				t.Fatal(err)
			}
		}
		p := wire.Progress{Seq: int64(i + 1), Stage: r.stage, Percentage: r.pct, Message: fmt.Sprint(r.pct)}
		res := reportCached(t, ctx, pp, task.ID, tok, p)
		got := res.Task.Status.Status
		if i == len(plan)-1 && got == wire.StatusInstalling {
			// The final report went the authoritative way (a guard moved
			// under its batch, e.g. the stall reached the cache late): it
			// is stored, and the region completes the task, as
			// agentapi's progressDone does.
			t.Logf("final report stored by the authoritative path; completing as the region does")
			if _, err := s.Transition(ctx, task.ID, wire.StatusCompleted, store.CompletedReason); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want := wire.StatusInstalling
		if i == len(plan)-1 {
			want = wire.StatusCompleted // the batch completes the task with the final report
		}
		if got != want {
			t.Fatalf("report %d answered status %s, want %s", i, got, want)
		}
	}
	final := int64(len(plan))

	// Collect until the final report is seen, then a little more.
	var (
		progSeqs []int64
		stages   []string
		statuses []string
		history  []string // stage and status events, in key order
		sawFinal bool
	)
	timeout := time.After(10 * time.Second)
	var drained <-chan time.Time // after the final report: the rest of its transaction
collect:
	for {
		select {
		case c := <-changes:
			if c.TaskID != task.ID {
				continue
			}
			switch c.Kind {
			case store.KindProgress:
				if c.Live {
					continue
				}
				progSeqs = append(progSeqs, c.Progress.Seq)
				if c.Progress.Seq == final && !sawFinal {
					sawFinal, drained = true, time.After(300*time.Millisecond)
				}
			case store.KindEvent:
				if c.Event.Kind == "stage" {
					stages = append(stages, c.Event.Stage)
					history = append(history, "stage "+c.Event.Stage)
				} else {
					history = append(history, "status "+string(c.Event.To))
				}
			case store.KindStatus:
				statuses = append(statuses, string(c.Status.Status))
			}
		case <-drained:
			break collect
		case <-timeout:
			t.Fatalf("final report never written; progress writes %v", progSeqs)
		}
	}
	for i := 1; i < len(progSeqs); i++ {
		if progSeqs[i] <= progSeqs[i-1] {
			t.Fatalf("progress written out of order: %v", progSeqs)
		}
	}
	if len(progSeqs) >= len(plan) {
		t.Errorf("%d reports took %d writes: nothing was coalesced", len(plan), len(progSeqs))
	}
	wantStages := []string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring, wire.StageCompleted}
	if fmt.Sprint(stages) != fmt.Sprint(wantStages) {
		t.Errorf("stage events %v, want %v", stages, wantStages)
	}
	wantStatus := []string{"installing", "stalled", "installing", "completed"}
	if fmt.Sprint(statuses) != fmt.Sprint(wantStatus) {
		t.Errorf("status changes %v, want %v", statuses, wantStatus)
	}
	if n := len(history); n < 2 || history[n-2] != "stage completed" || history[n-1] != "status completed" {
		t.Errorf("history ends %v, want the completed stage, then the move to completed", history)
	}
	got, err := s.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Progress == nil || got.Progress.Seq != final || got.Progress.Stage != wire.StageCompleted || got.Status.Status != wire.StatusCompleted ||
		got.Status.Reason != store.CompletedReason {
		t.Fatalf("stored %+v, status %+v; want the final report and completed", got.Progress, got.Status)
	}
	evs, err := s.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(evs); n < 2 || evs[n-2].Kind != "stage" || evs[n-2].Stage != wire.StageCompleted || evs[n-1].To != wire.StatusCompleted {
		t.Errorf("stored history ends %+v, want the completed stage, then the move to completed", evs[max(0, len(evs)-2):])
	}
	t.Logf("%d reports, %d progress writes", len(plan), len(progSeqs))
}

// TestProgressPathGuards: a report pending when the operator cancels is
// never written after the cancel, a report of a revoked session or a
// cancelled task is not taken by the cache, and a repeat or an older seq
// is left to the authoritative path.
func TestProgressPathGuards(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task, tok := agentSession(t, ctx, s, "02:00:00:00:0c:02")
	pp := storetest.RunProgressPath(t, s, time.Hour, 0) // pending reports wait for a change
	reportCached(t, ctx, pp, task.ID, tok, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 0})
	reportCached(t, ctx, pp, task.ID, tok, wire.Progress{Seq: 2, Stage: wire.StagePartitioning, Percentage: 10})
	for _, p := range []wire.Progress{
		{Seq: 2, Stage: wire.StagePartitioning, Percentage: 10}, // repeat
		{Seq: 1, Stage: wire.StagePartitioning, Percentage: 10}, // older
		{Seq: 3, Stage: wire.StagePartitioning, Percentage: 5},  // percentage back
		{Seq: 3, Stage: wire.StageInstalling, Percentage: 60},   // skips a stage
	} {
		if _, err := pp.Report(ctx, task.ID, tok, "", p); !errors.Is(err, store.ErrNotCached) {
			t.Errorf("report %+v: err %v, want ErrNotCached", p, err)
		}
	}
	if _, err := pp.Report(ctx, task.ID, tok, "02:00:00:00:0c:99", wire.Progress{Seq: 3, Stage: wire.StagePartitioning, Percentage: 15}); !errors.Is(err, store.ErrNotCached) {
		t.Errorf("another MAC: err %v, want ErrNotCached", err)
	}
	if _, err := pp.Report(ctx, task.ID, tok+"x", "", wire.Progress{Seq: 3, Stage: wire.StagePartitioning, Percentage: 15}); !errors.Is(err, store.ErrNotCached) {
		t.Errorf("wrong token: err %v, want ErrNotCached", err)
	}
	if err := pp.WaitWritten(ctx, task.ID); err != nil { // seq 1 (answered on acceptance) is stored
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, task.ID, wire.StatusCancelled, "test: cancelled"); err != nil {
		t.Fatal(err)
	}
	// The pending report (seq 2) goes out with the next change, which the
	// cancel refuses: neither is written. The change is answered on
	// acceptance (nil) until the cache sees the cancel, or after its
	// refused commit (a TransitionError).
	deadline := time.Now().Add(5 * time.Second)
	for seq := int64(4); ; seq++ {
		_, err := pp.Report(ctx, task.ID, tok, "", wire.Progress{Seq: seq, Stage: wire.StageDownloading, Percentage: 20 + int(seq)})
		if errors.Is(err, store.ErrNotCached) {
			break // the cache knows the task is cancelled
		}
		var te *store.TransitionError
		if err != nil && !errors.As(err, &te) {
			t.Fatalf("report after cancel: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache never saw the cancel")
		}
	}
	if err := pp.WaitWritten(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Status != wire.StatusCancelled || got.Progress == nil || got.Progress.Seq != 1 {
		t.Fatalf("after cancel: status %s, progress %+v; want cancelled with seq 1 stored", got.Status.Status, got.Progress)
	}
}

// TestProgressPathConcurrentTasksInOrder runs many tasks' installs at once
// through one path, so writes of different tasks overlap (rounds are not
// serialised): per task, etcd must still record the progress in seq order,
// every stage event once and in order, and the final report.
func TestProgressPathConcurrentTasksInOrder(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	const n = 12
	type agent struct {
		task store.Task
		tok  string
	}
	agents := make([]agent, n)
	for i := range agents {
		agents[i].task, agents[i].tok = agentSession(t, ctx, s, fmt.Sprintf("02:00:00:00:0d:%02x", i))
	}
	pp := storetest.RunProgressPath(t, s, 5*time.Millisecond, 0)
	_, rev, err := s.GetTaskRev(ctx, agents[0].task.ID)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	changes := s.Watch(wctx, rev+1)

	stages := []struct {
		name     string
		from, to int
	}{{wire.StagePartitioning, 0, 20}, {wire.StageDownloading, 20, 60}, {wire.StageInstalling, 60, 90}, {wire.StageConfiguring, 90, 100}, {wire.StageCompleted, 100, 100}}
	var plan []wire.Progress // every stage from its start to its end, 4% a step
	for _, st := range stages {
		for pct := st.from; ; pct = min(pct+4, st.to) {
			plan = append(plan, wire.Progress{Seq: int64(len(plan) + 1), Stage: st.name, Percentage: pct})
			if pct == st.to {
				break
			}
		}
	}
	finals := map[string]int64{}
	errs := make(chan error, n)
	for _, a := range agents {
		finals[a.task.ID] = int64(len(plan))
		go func() {
			for _, p := range plan {
				deadline := time.Now().Add(5 * time.Second)
				for {
					_, err := pp.Report(ctx, a.task.ID, a.tok, "", p)
					if err == nil {
						break
					}
					if !errors.Is(err, store.ErrNotCached) || time.Now().After(deadline) {
						errs <- fmt.Errorf("task %s seq %d: %w", a.task.ID, p.Seq, err)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	progSeqs := map[string][]int64{}
	stageEvents := map[string][]string{}
	done := 0
	timeout := time.After(20 * time.Second)
	var drained <-chan time.Time // after the last final report: the rest of its transaction
collect:
	for {
		select {
		case <-drained:
			break collect
		case c := <-changes:
			switch c.Kind {
			case store.KindProgress:
				if c.Live {
					continue
				}
				progSeqs[c.TaskID] = append(progSeqs[c.TaskID], c.Progress.Seq)
				if c.Progress.Seq == finals[c.TaskID] {
					if done++; done == n {
						drained = time.After(300 * time.Millisecond)
					}
				}
			case store.KindEvent:
				if c.Event.Kind == "stage" {
					stageEvents[c.TaskID] = append(stageEvents[c.TaskID], c.Event.Stage)
				}
			}
		case <-timeout:
			t.Fatalf("%d of %d final reports written", done, n)
		}
	}
	want := fmt.Sprint([]string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring, wire.StageCompleted})
	for _, a := range agents {
		id := a.task.ID
		seqs := progSeqs[id]
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("task %s: progress written out of order: %v", id, seqs)
			}
		}
		if got := fmt.Sprint(stageEvents[id]); got != want {
			t.Errorf("task %s: stage events %s, want %s", id, got, want)
		}
		got, err := s.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Progress == nil || got.Progress.Seq != finals[id] || got.Progress.Stage != wire.StageCompleted {
			t.Errorf("task %s: stored %+v, want the final report (seq %d)", id, got.Progress, finals[id])
		}
	}
}

// TestProgressPathPersistInterval: with a long persist interval a task's
// within-stage reports are not written to etcd but reach this process's
// watchers at once (Live), and the stream never goes back: a stored
// report older than a live one already seen is left out.
func TestProgressPathPersistInterval(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task, tok := agentSession(t, ctx, s, "02:00:00:00:0e:01")
	pp := storetest.RunProgressPath(t, s, 5*time.Millisecond, time.Hour)
	_, rev, err := s.GetTaskRev(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	changes := s.Watch(wctx, rev+1)
	plan := []wire.Progress{
		{Stage: wire.StagePartitioning, Percentage: 0}, {Stage: wire.StagePartitioning, Percentage: 10},
		{Stage: wire.StageDownloading, Percentage: 20}, {Stage: wire.StageDownloading, Percentage: 30},
		{Stage: wire.StageDownloading, Percentage: 40}, {Stage: wire.StageDownloading, Percentage: 60},
		{Stage: wire.StageInstalling, Percentage: 60}, {Stage: wire.StageInstalling, Percentage: 90},
		{Stage: wire.StageConfiguring, Percentage: 90}, {Stage: wire.StageConfiguring, Percentage: 100},
		{Stage: wire.StageCompleted, Percentage: 100},
	}
	var stored, live, seen []int64
	timeout := time.After(10 * time.Second)
	next := func() {
		select {
		case c := <-changes:
			if c.TaskID != task.ID || c.Kind != store.KindProgress {
				return
			}
			if c.Live {
				live = append(live, c.Progress.Seq)
			} else {
				stored = append(stored, c.Progress.Seq)
			}
			seen = append(seen, c.Progress.Seq)
		case <-timeout:
			t.Fatalf("final report never written: stored %v, live %v", stored, live)
		}
	}
	for i := range plan {
		plan[i].Seq = int64(i + 1)
		reportCached(t, ctx, pp, task.ID, tok, plan[i])
		// The first report reaches the watch (live, or stored) before the
		// others are sent: the watch is then subscribed to the live ones
		// (answers come in microseconds, before the watch's goroutine
		// would have started).
		for i == 0 && len(seen) == 0 {
			next()
		}
	}
	for len(stored) == 0 || stored[len(stored)-1] != int64(len(plan)) {
		next()
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("the watch went back: %v (stored %v, live %v)", seen, stored, live)
		}
	}
	if len(live) == 0 {
		t.Errorf("no live report seen: stored %v", stored)
	}
	// What etcd holds: the first report of each stage (it changes the
	// stage) and nothing within a stage. (A watch started now replays the
	// history; the live reports went out before it.)
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	replay := s.Watch(rctx, rev+1)
	var written []int64
	for len(written) == 0 || written[len(written)-1] != int64(len(plan)) {
		select {
		case c := <-replay:
			if c.TaskID == task.ID && c.Kind == store.KindProgress {
				if c.Live {
					t.Fatalf("live report %d on a watch started after it", c.Progress.Seq)
				}
				written = append(written, c.Progress.Seq)
			}
		case <-timeout:
			t.Fatalf("replay: final report not seen: %v", written)
		}
	}
	if want := "[1 3 7 9 11]"; fmt.Sprint(written) != want {
		t.Errorf("stored reports %v, want %s", written, want)
	}
}
