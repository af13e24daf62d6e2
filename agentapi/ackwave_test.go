package agentapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// TestProgressAgentSequenceOverHTTP sends, for several tasks at once, the
// real agent's sequence back to back (every stage boundary sent as soon
// as the previous one is answered, stage changes answered on acceptance,
// the configuring 100 report with its partition table taking the
// authoritative way): every answer is 200 (the authoritative path judges
// the partition report against a state holding the accepted stage changes,
// never as a skip), the final report's answer comes after its commit
// (etcd says completed when it arrives), and etcd holds every stage event
// once, in order.
func TestProgressAgentSequenceOverHTTP(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", func(c *Config) { c.ProgressWindow = 5 * time.Millisecond })
	r.start(t)
	addImage(t, st, "ubuntu", "22.04", []byte("image"))
	const n = 8
	type agent struct {
		id, sess string
	}
	agents := make([]agent, n)
	for i := range agents {
		task, sess := approvedWithSession(t, st, r)
		agents[i] = agent{task.ID, sess}
	}
	waitFor(t, 5*time.Second, "progress cache", r.fast.pp.Ready)
	parts := []wire.Partition{{Number: 1, Type: "0x83", StartBytes: 1 << 20, SizeBytes: 1 << 30, FS: "ext4", Role: "root"}}
	plan := []wire.Progress{
		{Stage: wire.StagePartitioning, Percentage: 0}, {Stage: wire.StagePartitioning, Percentage: 20},
		{Stage: wire.StageDownloading, Percentage: 20}, {Stage: wire.StageDownloading, Percentage: 60},
		{Stage: wire.StageInstalling, Percentage: 60}, {Stage: wire.StageInstalling, Percentage: 90},
		{Stage: wire.StageConfiguring, Percentage: 90}, {Stage: wire.StageConfiguring, Percentage: 100, Partitions: parts},
		{Stage: wire.StageCompleted, Percentage: 100},
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() {
			for i, p := range plan {
				p.TaskID, p.Seq = a.id, int64(i+1)
				var out wire.ProgressResponse
				code := call(t, "POST", r.srv.URL+wire.PathProgress, a.sess, p, &out)
				if code != http.StatusOK {
					t.Errorf("task %s: %s %d%%: %d, want 200", a.id, p.Stage, p.Percentage, code)
					return
				}
				if p.Stage != wire.StageCompleted {
					continue
				}
				if out.Status != wire.StatusCompleted {
					t.Errorf("task %s: final report answered %s", a.id, out.Status)
					return
				}
				got, err := st.GetTask(context.Background(), a.id)
				if err != nil {
					t.Error(err)
					return
				}
				if got.Status.Status != wire.StatusCompleted || got.Progress == nil || got.Progress.Seq != p.Seq {
					t.Errorf("task %s: answered completed, etcd holds %s with %+v", a.id, got.Status.Status, got.Progress)
				}
			}
		})
	}
	wg.Wait()
	want := fmt.Sprint([]string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring, wire.StageCompleted})
	for _, a := range agents {
		evs, err := st.Events(context.Background(), a.id)
		if err != nil {
			t.Fatal(err)
		}
		var stages []string
		for _, e := range evs {
			if e.Kind == "stage" {
				stages = append(stages, e.Stage)
			}
		}
		if fmt.Sprint(stages) != want {
			t.Errorf("task %s: stage events %v, want %s", a.id, stages, want)
		}
	}
}

// TestProgressCancelRacingStageChangeOverHTTP: an operator cancel right
// after a stage change was answered (on acceptance, so perhaps not yet
// written): the task ends cancelled, no report is stored after the
// cancel, and the agent's next reports are refused with the usual 409
// once the region sees the cancel.
func TestProgressCancelRacingStageChangeOverHTTP(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", func(c *Config) { c.ProgressWindow = 5 * time.Millisecond })
	r.start(t)
	addImage(t, st, "ubuntu", "22.04", []byte("image"))
	task, sess := approvedWithSession(t, st, r)
	waitFor(t, 5*time.Second, "progress cache", r.fast.pp.Ready)
	seq := int64(0)
	send := func(stage string, pct int) (int, wire.Error) {
		seq++
		var e wire.Error
		code := call(t, "POST", r.srv.URL+wire.PathProgress, sess, wire.Progress{TaskID: task.ID, Seq: seq, Stage: stage, Percentage: pct}, &e)
		return code, e
	}
	if code, _ := send(wire.StagePartitioning, 20); code != http.StatusOK {
		t.Fatalf("first report: %d", code)
	}
	if code, _ := send(wire.StageDownloading, 20); code != http.StatusOK {
		t.Fatalf("stage change: %d", code)
	}
	lastBeforeCancel := seq
	if _, err := st.Transition(context.Background(), task.ID, wire.StatusCancelled, "test: operator cancel"); err != nil {
		t.Fatal(err)
	}
	var refusal wire.Error
	waitFor(t, 5*time.Second, "the refusal", func() bool {
		code, e := send(wire.StageDownloading, 20+int(seq))
		refusal = e
		return code == http.StatusConflict
	})
	if want := "task " + task.ID + " is cancelled: progress is accepted only once it is approved"; !strings.Contains(refusal.Error, want) {
		t.Errorf("refusal %q, want %q", refusal.Error, want)
	}
	if err := r.fast.pp.WaitWritten(context.Background(), task.ID); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetTask(context.Background(), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	// No progress stored is right too: under load the cancel can land
	// before the writer wrote seq 1, whose guard then fails and the
	// authoritative path refuses it (dropped, as fastprogress.go says).
	if got.Status.Status != wire.StatusCancelled || got.Progress != nil && got.Progress.Seq > lastBeforeCancel {
		t.Fatalf("in the end: %s with %+v; want cancelled, nothing stored after seq %d", got.Status.Status, got.Progress, lastBeforeCancel)
	}
	if u := r.fast.pp.Unwritten(); u != 0 {
		t.Errorf("unwritten %d, want 0", u)
	}
	// The gauge of /metrics reads the same count.
	reg := prometheus.NewRegistry()
	for _, c := range r.Collectors() {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "lpmos_agent_progress_unwritten" {
			m := mf.GetMetric()
			found = len(m) == 1 && m[0].GetGauge().GetValue() == 0 && m[0].GetLabel()[0].GetValue() == "dc1"
		}
	}
	if !found {
		t.Errorf("no lpmos_agent_progress_unwritten{region=\"dc1\"} 0 among %d metric families", len(mfs))
	}
}
