package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// A stage change that supersedes a coalesced report and then has to go the
// authoritative way (here: every event needs the history bound's read)
// must not be judged against a stored report older than the one it
// superseded: configuring 100 was accepted (coalesced, not yet written), so
// completed 100 is in order and is stored.
func TestProgressPathSlowStageChangeAfterCoalesced(t *testing.T) {
	t.Parallel()
	s := openStore(t, func(c *store.Config) { c.MaxTaskEvents = 1 })
	ctx := context.Background()
	task, tok := agentSession(t, ctx, s, "02:00:00:00:0c:51")
	// A long window: the coalesced report stays pending until the change.
	pp := storetest.RunProgressPath(t, s, time.Minute, time.Minute)
	plan := []struct {
		stage string
		pct   int
	}{
		{wire.StagePartitioning, 0},
		{wire.StageDownloading, 20},
		{wire.StageInstalling, 60},
		{wire.StageConfiguring, 90},
		{wire.StageConfiguring, 100}, // coalesced: pending when the next arrives
		{wire.StageCompleted, 100},
	}
	var res store.ProgressResult
	for i, r := range plan {
		res = reportCached(t, ctx, pp, task.ID, tok, wire.Progress{Seq: int64(i + 1), Stage: r.stage, Percentage: r.pct})
	}
	if res.Task.Progress == nil || res.Task.Progress.Seq != int64(len(plan)) {
		t.Fatalf("final report answered progress %+v, want seq %d", res.Task.Progress, len(plan))
	}
	// On this path the region moves the task to completed (agentapi's
	// progressDone); the store holds the final report.
	stored, err := s.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p := stored.Progress; p == nil || p.Stage != wire.StageCompleted || p.Seq != int64(len(plan)) {
		t.Fatalf("stored progress %+v, want the final report (seq %d)", p, len(plan))
	}
}
