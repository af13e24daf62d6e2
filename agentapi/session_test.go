package agentapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// TestRebootMidInstall: a machine that reboots while installing fetches a
// new script, redeems its boot token (revoking the old session) and its new
// agent starts again at partitioning: accepted, as a new run; the old
// session is refused with 401 saying it was revoked.
func TestRebootMidInstall(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	addImage(t, st, "ubuntu", "22.04", []byte("img"))
	r := newRegion(t, st, "dc1", nil)
	task := createTask(t, st, "dc1")
	mac := task.Spec.TargetMAC
	advance(t, r, task.ID, wire.StatusPendingApproval)
	code, sr := exchange(t, r, bootToken(t, r, mac), task)
	if code != 200 {
		t.Fatalf("first boot: %d", code)
	}
	first := sr.SessionToken
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
	seq := time.Now().UnixMicro()
	report := func(tok, stage string, pct int) (int, wire.Error) {
		seq++
		var e wire.Error
		return call(t, "POST", r.srv.URL+wire.PathProgress, tok, wire.Progress{TaskID: task.ID, Seq: seq, Stage: stage, Percentage: pct}, &e), e
	}
	for _, s := range []struct {
		stage string
		pct   int
	}{{"partitioning", 0}, {"partitioning", 20}, {"downloading", 20}, {"downloading", 40}} {
		if code, e := report(first, s.stage, s.pct); code != 200 {
			t.Fatalf("first run %s %d: %d %s", s.stage, s.pct, code, e.Error)
		}
	}

	// The machine reboots.
	code, sr = exchange(t, r, bootToken(t, r, mac), task)
	if code != 200 || sr.Status != wire.StatusInstalling {
		t.Fatalf("second boot: %d %+v", code, sr)
	}
	second := sr.SessionToken
	var hr wire.HardwareResponse
	if code := call(t, "POST", r.srv.URL+wire.PathHardware, second, wire.HardwareReport{MACAddress: mac, TaskID: task.ID, Hardware: wire.Hardware{BootMode: "bios"}}, &hr); code != 200 || hr.Status != wire.StatusInstalling {
		t.Fatalf("hardware after the reboot: %d %+v", code, hr)
	}
	var ar wire.ApprovalResponse
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+mac, second, nil, &ar); code != 200 || ar.Install == nil || ar.Install.UserData == "" {
		t.Fatalf("approval after the reboot: %d %+v", code, ar)
	}
	if code, e := report(second, "downloading", 45); code != http.StatusConflict || !strings.Contains(e.Error, "expected stage partitioning") {
		t.Fatalf("new run not starting at partitioning: %d %s", code, e.Error)
	}
	for _, s := range []struct {
		stage string
		pct   int
	}{{"partitioning", 0}, {"partitioning", 20}, {"downloading", 30}, {"installing", 60}, {"installing", 90}, {"configuring", 90}, {"configuring", 100}, {"completed", 100}} {
		if code, e := report(second, s.stage, s.pct); code != 200 {
			t.Fatalf("second run %s %d: %d %s", s.stage, s.pct, code, e.Error)
		}
	}
	if code, e := report(first, "downloading", 50); code != http.StatusUnauthorized || !strings.Contains(e.Error, "revoked") {
		t.Errorf("the first run's session: %d %q", code, e.Error)
	}
	done := waitStatus(t, st, task.ID, wire.StatusCompleted)
	if done.Progress.Run != 2 {
		t.Errorf("final progress run %d, want 2", done.Progress.Run)
	}
	// The completing session may repeat its final report; the revoked one
	// may not.
	var pr wire.ProgressResponse
	if code := call(t, "POST", r.srv.URL+wire.PathProgress, second, wire.Progress{TaskID: task.ID, Seq: seq, Stage: "completed", Percentage: 100}, &pr); code != 200 || !pr.Duplicate {
		t.Errorf("repeated completion: %d %+v", code, pr)
	}
	if code := call(t, "POST", r.srv.URL+wire.PathProgress, first, wire.Progress{TaskID: task.ID, Seq: seq, Stage: "completed", Percentage: 100}, nil); code != http.StatusUnauthorized {
		t.Errorf("repeated completion with the revoked session: %d", code)
	}
}

// TestDiscoverySessionOverHTTP: the discovery session opens only the
// approval poll of its MAC; a newer report replaces it (401 with a reason).
func TestDiscoverySessionOverHTTP(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", nil)
	mac := nextMAC()
	report := func() string {
		var hr wire.HardwareResponse
		if code := call(t, "POST", r.srv.URL+wire.PathHardware, "", wire.HardwareReport{MACAddress: mac}, &hr); code != 200 || !strings.HasPrefix(hr.SessionToken, "d_") {
			t.Fatalf("discovery report: %d %+v", code, hr)
		}
		return hr.SessionToken
	}
	first := report()
	var e wire.Error
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+mac+"?wait=100ms", first, nil, &e); code != http.StatusNotFound || !strings.Contains(e.Error, "no task") {
		t.Fatalf("poll without a task: %d %q", code, e.Error)
	}
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+nextMAC(), first, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("poll for another MAC: %d", code)
	}
	task := createTask(t, st, "dc1")
	for path, body := range map[string]any{
		wire.PathProgress: wire.Progress{TaskID: task.ID, Seq: 1, Stage: "partitioning"},
		wire.PathFailure:  wire.FailureReport{TaskID: task.ID, Reason: "x"},
	} {
		if code := call(t, "POST", r.srv.URL+path, first, body, nil); code != http.StatusUnauthorized {
			t.Errorf("%s with a discovery session: %d", path, code)
		}
	}
	report()
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+mac, first, nil, &e); code != http.StatusUnauthorized || !strings.Contains(e.Error, "replaced") {
		t.Errorf("replaced discovery session: %d %q", code, e.Error)
	}
}

// TestEndedTaskAgentGetsNewTask: the live agent of a failed task, polling
// with its session, is handed a new task created for its MAC (not only a
// retry of the old one).
func TestEndedTaskAgentGetsNewTask(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", nil)
	r.start(t)
	old := createTask(t, st, "dc1")
	mac := old.Spec.TargetMAC
	waitStatus(t, st, old.ID, wire.StatusReady)
	sess := sessionFor(t, st, old.ID)
	if _, err := st.Fail(ctx, old.ID, "disk on fire", nil); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		ar   wire.ApprovalResponse
	}
	got := make(chan answer, 1)
	go func() {
		var ar wire.ApprovalResponse
		code := call(t, "GET", r.srv.URL+wire.PathApproval+mac+"?wait=20s", sess, nil, &ar)
		got <- answer{code, ar}
	}()
	time.Sleep(300 * time.Millisecond)
	fresh, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	select {
	case a = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the poll was not answered when the new task appeared")
	}
	if a.code != 200 || a.ar.TaskID != fresh.ID || !strings.HasPrefix(a.ar.SessionToken, "s_"+fresh.ID+"_") {
		t.Fatalf("answer %d %+v", a.code, a.ar)
	}
	var hr wire.HardwareResponse
	if code := call(t, "POST", r.srv.URL+wire.PathHardware, a.ar.SessionToken, wire.HardwareReport{MACAddress: mac, TaskID: fresh.ID}, &hr); code != 200 || hr.Status != wire.StatusPendingApproval {
		t.Fatalf("hardware with the handed session: %d %+v", code, hr)
	}
}
