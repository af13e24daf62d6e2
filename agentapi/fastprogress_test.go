package agentapi

import (
	"net/http"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

// TestProgressFastPathOverHTTP drives a whole install through the agent
// API of a started region (the cached, coalescing path): every answer is
// 200, the region asks for a longer interval once installing tasks
// outnumber its report rate, refusals still come from the authoritative
// path, and the final report completes the task.
func TestProgressFastPathOverHTTP(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", func(c *Config) { c.ReportRate = 0.5; c.ProgressWindow = 50 * time.Millisecond })
	r.start(t)
	addImage(t, st, "ubuntu", "22.04", []byte("image"))
	task, sess := approvedWithSession(t, st, r)
	waitFor(t, 5*time.Second, "progress cache", r.fast.pp.Ready)

	seq := int64(0)
	send := func(stage string, pct int) (int, wire.ProgressResponse) {
		seq++
		var out wire.ProgressResponse
		code := call(t, "POST", r.srv.URL+wire.PathProgress, sess, wire.Progress{TaskID: task.ID, Seq: seq, Stage: stage, Percentage: pct}, &out)
		return code, out
	}
	if code, out := send(wire.StagePartitioning, 0); code != 200 || out.Status != wire.StatusInstalling {
		t.Fatalf("first report: %d %+v", code, out)
	}
	// One installing task against 0.5 reports a second: every 2 s.
	waitFor(t, 5*time.Second, "the slow-down answer", func() bool {
		code, out := send(wire.StagePartitioning, 10)
		return code == 200 && out.NextReportMS == 2000
	})
	if code, _ := send(wire.StageInstalling, 60); code != http.StatusConflict {
		t.Errorf("skipping a stage: %d, want 409", code)
	}
	for _, s := range []struct {
		stage string
		pct   int
	}{{wire.StagePartitioning, 20}, {wire.StageDownloading, 20}, {wire.StageDownloading, 60}, {wire.StageInstalling, 90}, {wire.StageConfiguring, 100}} {
		if code, out := send(s.stage, s.pct); code != 200 || out.Status != wire.StatusInstalling {
			t.Fatalf("%s %d%%: %d %+v", s.stage, s.pct, code, out)
		}
	}
	if code, out := send(wire.StageCompleted, 100); code != 200 || out.Status != wire.StatusCompleted {
		t.Fatalf("final report: %d %+v", code, out)
	}
	got := waitStatus(t, st, task.ID, wire.StatusCompleted)
	if got.Progress == nil || got.Progress.Stage != wire.StageCompleted || got.Progress.Seq != seq {
		t.Fatalf("stored progress %+v, want the final report (seq %d)", got.Progress, seq)
	}
}
