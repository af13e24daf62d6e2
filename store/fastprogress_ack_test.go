package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// Stage and status changes answered on acceptance (store/fastprogress.go,
// "Answered on acceptance"): answered before their commit (Revision 0),
// written right after, in order, none lost; the final report answered
// after its commit.

var allStages = []struct {
	name     string
	from, to int
}{{wire.StagePartitioning, 0, 20}, {wire.StageDownloading, 20, 60}, {wire.StageInstalling, 60, 90}, {wire.StageConfiguring, 90, 100}, {wire.StageCompleted, 100, 100}}

// TestProgressPathEarlyStageChangesWrittenInOrder runs many tasks' whole
// installs at once (every stage, a within-stage report in each): every
// stage change but the final report is answered before its commit, and
// then etcd holds, per task, the last report, every stage event once and
// in order, and installing then completed. The final report's answer
// comes after its commit: etcd says completed the moment it arrives.
func TestProgressPathEarlyStageChangesWrittenInOrder(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	const n = 24
	type agent struct {
		id, tok string
	}
	agents := make([]agent, n)
	for i := range agents {
		task, tok := agentSession(t, ctx, s, fmt.Sprintf("02:00:00:00:0f:%02x", i))
		agents[i] = agent{task.ID, tok}
	}
	pp := storetest.RunProgressPath(t, s, 5*time.Millisecond, 0)
	pp.SetEarlyLimit(store.DefaultEarlyLimit, time.Hour) // a starved writer on a loaded box is not the point here

	var plan []wire.Progress
	for _, st := range allStages {
		plan = append(plan, wire.Progress{Stage: st.name, Percentage: st.from})
		if st.to > st.from {
			plan = append(plan, wire.Progress{Stage: st.name, Percentage: (st.from + st.to) / 2}, wire.Progress{Stage: st.name, Percentage: st.to})
		}
	}
	for i := range plan {
		plan[i].Seq = int64(i + 1)
	}
	errs := make(chan error, n)
	for _, a := range agents {
		go func() {
			errs <- func() error {
				prev := ""
				for _, p := range plan {
					res, err := pp.Report(ctx, a.id, a.tok, "", p)
					if err != nil {
						return fmt.Errorf("task %s seq %d: %w", a.id, p.Seq, err)
					}
					change := p.Stage != prev
					prev = p.Stage
					if p.Stage == wire.StageCompleted {
						// The final report: answered after its commit.
						if res.Task.Revision == 0 {
							return fmt.Errorf("task %s: the final report was answered before its commit", a.id)
						}
						got, err := s.GetTask(ctx, a.id)
						if err != nil {
							return err
						}
						if got.Progress == nil || got.Progress.Seq != p.Seq {
							return fmt.Errorf("task %s: answered the final report, etcd holds %+v", a.id, got.Progress)
						}
						if res.Task.Status.Status == wire.StatusCompleted && got.Status.Status != wire.StatusCompleted {
							return fmt.Errorf("task %s: answered completed, etcd says %s", a.id, got.Status.Status)
						}
						continue
					}
					if res.Task.Status.Status != wire.StatusInstalling {
						return fmt.Errorf("task %s seq %d: answered %s, want installing", a.id, p.Seq, res.Task.Status.Status)
					}
					if change && res.Task.Revision != 0 {
						return fmt.Errorf("task %s: stage change %s answered after its commit (revision %d), want on acceptance", a.id, p.Stage, res.Task.Revision)
					}
				}
				return nil
			}()
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if u := pp.Unwritten(); u != 0 {
		t.Errorf("%d answered reports unwritten after every task's final report", u)
	}
	want := fmt.Sprint([]string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring, wire.StageCompleted})
	last := plan[len(plan)-1].Seq
	for _, a := range agents {
		got, err := s.GetTask(ctx, a.id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Progress == nil || got.Progress.Seq != last || got.Progress.Stage != wire.StageCompleted {
			t.Errorf("task %s: stored %+v, want the last report (seq %d)", a.id, got.Progress, last)
		}
		evs, err := s.Events(ctx, a.id)
		if err != nil {
			t.Fatal(err)
		}
		var stages, statuses []string
		for _, e := range evs {
			switch e.Kind {
			case "stage":
				stages = append(stages, e.Stage)
			case "status":
				statuses = append(statuses, string(e.To))
			}
		}
		if fmt.Sprint(stages) != want {
			t.Errorf("task %s: stage events %v, want %s", a.id, stages, want)
		}
		if i := slices.Index(statuses, string(wire.StatusInstalling)); i < 0 || !slices.Equal(statuses[i:], []string{"installing", "completed"}) {
			t.Errorf("task %s: status events %v, want installing then completed last", a.id, statuses)
		}
	}
}

// TestProgressPathCancelRacesEarlyStageChange: a cancel that lands
// between a stage change's answer (on acceptance) and its write wins: the
// stored state is cancelled, the stage change is never written after it,
// and the agent's next report is refused as the authoritative path
// refuses a cancelled task's progress.
func TestProgressPathCancelRacesEarlyStageChange(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task, tok := agentSession(t, ctx, s, "02:00:00:00:0f:a1")
	pp := storetest.RunProgressPath(t, s, 5*time.Millisecond, 0)
	pp.SetEarlyLimit(store.DefaultEarlyLimit, time.Hour)
	reportCached(t, ctx, pp, task.ID, tok, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 20})
	if err := pp.WaitWritten(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	release := pp.HoldWriter() // the writer is behind: the change stays unwritten
	defer release()
	res, err := pp.Report(ctx, task.ID, tok, "", wire.Progress{Seq: 2, Stage: wire.StageDownloading, Percentage: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Task.Revision != 0 || res.Task.Status.Status != wire.StatusInstalling {
		t.Fatalf("stage change answered %+v (revision %d), want installing on acceptance", res.Task.Status, res.Task.Revision)
	}
	if u := pp.Unwritten(); u != 1 {
		t.Fatalf("unwritten %d, want 1", u)
	}
	if _, err := s.Transition(ctx, task.ID, wire.StatusCancelled, "test: cancelled"); err != nil {
		t.Fatal(err)
	}
	release()
	if err := pp.WaitWritten(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Status != wire.StatusCancelled || got.Progress == nil || got.Progress.Seq != 1 {
		t.Fatalf("after the race: status %s, progress %+v; want cancelled with seq 1 stored", got.Status.Status, got.Progress)
	}
	evs, err := s.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Kind == "stage" && e.Stage == wire.StageDownloading {
			t.Fatalf("the refused stage change was written: %+v", evs)
		}
	}
	// The agent's next report: the cache sees the cancel (until then it
	// may accept and the write is refused again), then the authoritative
	// path refuses it.
	deadline := time.Now().Add(5 * time.Second)
	seq := int64(3)
	for ; ; seq++ {
		_, err := pp.Report(ctx, task.ID, tok, "", wire.Progress{Seq: seq, Stage: wire.StageDownloading, Percentage: 20 + int(seq)})
		if errors.Is(err, store.ErrNotCached) {
			break
		}
		if err != nil {
			t.Fatalf("report after cancel: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache never saw the cancel")
		}
	}
	if err := pp.WaitWritten(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReportAgentProgress(ctx, task.ID, wire.Progress{Seq: seq, Stage: wire.StageDownloading, Percentage: 20 + int(seq)})
	var te *store.TransitionError
	if !errors.As(err, &te) || te.From != wire.StatusCancelled {
		t.Fatalf("next report the authoritative way: %v, want refused: task is cancelled", err)
	}
	if got, err = s.GetTask(ctx, task.ID); err != nil || got.Status.Status != wire.StatusCancelled || got.Progress.Seq != 1 {
		t.Fatalf("in the end: %v, status %s, progress %+v; want cancelled with seq 1", err, got.Status.Status, got.Progress)
	}
}

// TestProgressPathEarlyBackpressure: with the writer held (behind, or an
// etcd that does not answer), stage changes stop being answered on
// acceptance past the bound, and once none has been written for the stall
// delay: they are answered after their commit.
func TestProgressPathEarlyBackpressure(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	const n = 6
	type agent struct {
		id, tok string
	}
	agents := make([]agent, n)
	for i := range agents {
		task, tok := agentSession(t, ctx, s, fmt.Sprintf("02:00:00:00:0f:%02x", 0xb0+i))
		agents[i] = agent{task.ID, tok}
	}
	pp := storetest.RunProgressPath(t, s, 5*time.Millisecond, 0)
	pp.SetEarlyLimit(3, time.Hour)
	for _, a := range agents {
		reportCached(t, ctx, pp, a.id, a.tok, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 20})
		if err := pp.WaitWritten(ctx, a.id); err != nil {
			t.Fatal(err)
		}
	}
	type answer struct {
		i   int
		res store.ProgressResult
		err error
	}
	change := func(i int, seq int64, stage string, pct int, out chan<- answer) {
		res, err := pp.Report(ctx, agents[i].id, agents[i].tok, "", wire.Progress{Seq: seq, Stage: stage, Percentage: pct})
		out <- answer{i, res, err}
	}

	// The count bound: 3 answered on acceptance, the 4th waits for its commit.
	release := pp.HoldWriter()
	for i := range 3 {
		out := make(chan answer, 1)
		change(i, 2, wire.StageDownloading, 20, out)
		if a := <-out; a.err != nil || a.res.Task.Revision != 0 {
			t.Fatalf("change %d under the bound: %v, revision %d; want answered on acceptance", i, a.err, a.res.Task.Revision)
		}
	}
	waited := make(chan answer, 1)
	go change(3, 2, wire.StageDownloading, 20, waited)
	waitQueued(t, pp, 4)
	// A within-stage report is still answered at once (coalesced).
	if _, err := pp.Report(ctx, agents[0].id, agents[0].tok, "", wire.Progress{Seq: 3, Stage: wire.StageDownloading, Percentage: 30}); err != nil {
		t.Fatal(err)
	}
	if u := pp.Unwritten(); u != 3 {
		t.Fatalf("unwritten %d with the writer held, want the bound (3)", u)
	}
	release()
	if a := <-waited; a.err != nil || a.res.Task.Revision == 0 {
		t.Fatalf("change past the bound: %v, revision %d; want answered after its commit", a.err, a.res.Task.Revision)
	}
	for _, a := range agents {
		if err := pp.WaitWritten(ctx, a.id); err != nil {
			t.Fatal(err)
		}
	}
	if u := pp.Unwritten(); u != 0 {
		t.Fatalf("unwritten %d after the writes, want 0", u)
	}

	// The stall delay: one answered and unwritten for longer than it, the
	// next change waits for its commit.
	const stall = 20 * time.Millisecond
	pp.SetEarlyLimit(100, stall)
	release = pp.HoldWriter()
	out := make(chan answer, 1)
	change(4, 2, wire.StageDownloading, 20, out)
	if a := <-out; a.err != nil || a.res.Task.Revision != 0 {
		t.Fatalf("first change: %v, revision %d; want answered on acceptance", a.err, a.res.Task.Revision)
	}
	time.Sleep(2 * stall) // nothing written meanwhile: the writer is held
	go change(5, 2, wire.StageDownloading, 20, waited)
	waitQueued(t, pp, 2)
	release()
	if a := <-waited; a.err != nil || a.res.Task.Revision == 0 {
		t.Fatalf("change after the stall delay: %v, revision %d; want answered after its commit", a.err, a.res.Task.Revision)
	}
	for _, a := range agents {
		if err := pp.WaitWritten(ctx, a.id); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetTask(ctx, a.id); err != nil || got.Progress == nil || got.Progress.Stage != wire.StageDownloading {
			t.Errorf("task %s: %v, stored %+v; want its downloading report", a.id, err, got.Progress)
		}
	}
}

// waitQueued waits until the held writer has n reports queued.
func waitQueued(t *testing.T, pp *store.ProgressPath, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for pp.QueuedReports() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d reports queued, want %d", pp.QueuedReports(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestProgressPathInstallingCountsAcceptedMove: a first report answered on
// acceptance counts its task as installing before it is written (the
// region's report interval reads the count: a writer that is behind must
// not make every agent report at full rate).
func TestProgressPathInstallingCountsAcceptedMove(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task, tok := agentSession(t, ctx, s, "02:00:00:00:0f:c1")
	pp := storetest.RunProgressPath(t, s, 5*time.Millisecond, 0)
	pp.SetEarlyLimit(store.DefaultEarlyLimit, time.Hour)
	if n := pp.InstallingTasks(); n != 0 {
		t.Fatalf("installing %d before any report, want 0", n)
	}
	release := pp.HoldWriter()
	defer release()
	res := reportCached(t, ctx, pp, task.ID, tok, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 0})
	if res.Task.Revision != 0 || res.Task.Status.Status != wire.StatusInstalling {
		t.Fatalf("first report answered %s (revision %d), want installing on acceptance", res.Task.Status.Status, res.Task.Revision)
	}
	if got, err := s.GetTask(ctx, task.ID); err != nil || got.Status.Status != wire.StatusApproved {
		t.Fatalf("stored %v %s, want still approved while the writer is held", err, got.Status.Status)
	}
	if n := pp.InstallingTasks(); n != 1 {
		t.Errorf("installing %d with the move accepted and unwritten, want 1", n)
	}
	release()
	if err := pp.WaitWritten(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	if n := pp.InstallingTasks(); n != 1 {
		t.Errorf("installing %d once written, want 1", n)
	}
}

// TestProgressPathStopWritesAnsweredChanges: the region stops while stage
// changes it answered on acceptance are unwritten (the writer behind):
// the writer writes them before Run returns, so a stop loses none.
func TestProgressPathStopWritesAnsweredChanges(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	const n = 5
	ids, toks := make([]string, n), make([]string, n)
	for i := range n {
		task, tok := agentSession(t, ctx, s, fmt.Sprintf("02:00:00:00:0f:%02x", 0xd0+i))
		ids[i], toks[i] = task.ID, tok
	}
	pp := s.NewProgressPath("dc1", 5*time.Millisecond)
	pp.SetPersistInterval(0)
	pp.SetEarlyLimit(store.DefaultEarlyLimit, time.Hour)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); pp.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	for !pp.Ready() {
		time.Sleep(5 * time.Millisecond)
	}
	for i := range n {
		reportCached(t, ctx, pp, ids[i], toks[i], wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 20})
		if err := pp.WaitWritten(ctx, ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	release := pp.HoldWriter()
	for i := range n {
		res, err := pp.Report(ctx, ids[i], toks[i], "", wire.Progress{Seq: 2, Stage: wire.StageDownloading, Percentage: 25})
		if err != nil || res.Task.Revision != 0 {
			t.Fatalf("change %d: %v, revision %d; want answered on acceptance", i, err, res.Task.Revision)
		}
	}
	if u := pp.Unwritten(); u != n {
		t.Fatalf("unwritten %d before the stop, want %d", u, n)
	}
	stop()
	release() // the writer was behind; the stop's drain takes what it queued
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	for i := range n {
		got, err := s.GetTask(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if got.Progress == nil || got.Progress.Seq != 2 || got.Progress.Stage != wire.StageDownloading {
			t.Errorf("task %d after the stop: progress %+v; want the answered change (seq 2, downloading) stored", i, got.Progress)
		}
	}
}
