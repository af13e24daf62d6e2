package agentapi

import (
	"context"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/pxe"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func TestRegionsClaimOnlyTheirOwnTasks(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	before1 := createTask(t, st, "dc1")
	before2 := createTask(t, st, "dc2")

	dc1 := newRegion(t, st, "dc1", nil)
	dc2 := newRegion(t, st, "dc2", nil)
	dc1.start(t)
	dc2.start(t)

	after1 := createTask(t, st, "dc1")
	after2 := createTask(t, st, "dc2")
	orphan := createTask(t, st, "dc3") // no region serves dc3

	owner := map[string]*testRegion{before1.ID: dc1, after1.ID: dc1, before2.ID: dc2, after2.ID: dc2}
	for id, r := range owner {
		task := waitStatus(t, st, id, wire.StatusReady)
		other := dc1
		if r == dc1 {
			other = dc2
		}
		// Only the owner boots it, and only the owner redeems its boot token.
		boot := bootToken(t, r, task.Spec.TargetMAC)
		if code, _ := exchange(t, other, boot, task); code != http.StatusNotFound {
			t.Errorf("task %s: the other region redeems its boot token (%d)", id, code)
		}
		if code, sr := exchange(t, r, boot, task); code != 200 || sr.TaskID != id || sr.Status != wire.StatusReady {
			t.Errorf("task %s: owner refused its boot token: %d %+v", id, code, sr)
		}
	}

	// A retried task is claimed again, with a new attempt and token.
	advance(t, dc1, after1.ID, wire.StatusFailed)
	if _, err := st.Transition(ctx, after1.ID, wire.StatusPending, "retry"); err != nil {
		t.Fatal(err)
	}
	retried := waitStatus(t, st, after1.ID, wire.StatusReady)
	if retried.Status.Attempt != 2 {
		t.Fatalf("retried attempt = %d, want 2", retried.Status.Attempt)
	}
	if code, _ := exchange(t, dc1, bootToken(t, dc1, retried.Spec.TargetMAC), retried); code != 200 {
		t.Errorf("retried task: attempt 2 boot token refused (%d)", code)
	}

	time.Sleep(300 * time.Millisecond)
	if task, _ := st.GetTask(ctx, orphan.ID); task.Status.Status != wire.StatusPending {
		t.Errorf("task of region dc3 is %s: someone else claimed it", task.Status.Status)
	}
	regions, err := st.ListRegions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range regions {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"dc1", "dc2"}) {
		t.Errorf("registered regions = %v, want [dc1 dc2]", ids)
	}
}

func TestTokenOpensOnlyItsTask(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", nil)
	t1, t2, t3 := createTask(t, st, "dc1"), createTask(t, st, "dc1"), createTask(t, st, "dc1")
	for _, task := range []store.Task{t1, t2, t3} {
		advance(t, r, task.ID, wire.StatusReady)
	}
	tok1, tok2 := sessionFor(t, st, t1.ID), sessionFor(t, st, t2.ID)
	t4 := createTask(t, st, "dc1")
	advance(t, r, t4.ID, wire.StatusInstalling)
	tok4 := sessionFor(t, st, t4.ID)

	// t3 is retried and booted again: its attempt-1 session is revoked by
	// the new one.
	oldTok3 := sessionFor(t, st, t3.ID)
	advance(t, r, t3.ID, wire.StatusFailed)
	if _, err := st.Transition(ctx, t3.ID, wire.StatusPending, "retry"); err != nil {
		t.Fatal(err)
	}
	advance(t, r, t3.ID, wire.StatusReady)
	newTok3 := sessionFor(t, st, t3.ID)
	boot1 := bootToken(t, r, t1.Spec.TargetMAC) // a boot token is no session

	hw := func(task store.Task) wire.HardwareReport {
		return wire.HardwareReport{MACAddress: task.Spec.TargetMAC, TaskID: task.ID, Hardware: wire.Hardware{BootMode: "uefi"}}
	}
	u := r.srv.URL
	tests := []struct {
		name   string
		method string
		path   string
		token  string
		body   any
		want   int
	}{
		{"hardware no token (active task)", "POST", wire.PathHardware, "", hw(t1), http.StatusUnauthorized},
		{"hardware other task's token", "POST", wire.PathHardware, tok2, hw(t1), http.StatusForbidden},
		{"hardware made-up token", "POST", wire.PathHardware, "bm90LWEtdG9rZW4", hw(t1), http.StatusUnauthorized},
		{"hardware made-up session of the task", "POST", wire.PathHardware, "s_" + t1.ID + "_bm90LWEtdG9rZW4bm90LWEtdG9rZW4bm90LWEtdG9rZW4", hw(t1), http.StatusUnauthorized},
		{"hardware with the boot token", "POST", wire.PathHardware, boot1, hw(t1), http.StatusUnauthorized},
		{"hardware retried attempt's token", "POST", wire.PathHardware, oldTok3, hw(t3), http.StatusUnauthorized},
		{"hardware right token", "POST", wire.PathHardware, tok1, hw(t1), http.StatusOK},
		{"hardware retried task new token", "POST", wire.PathHardware, newTok3, hw(t3), http.StatusOK},
		{"approval no token", "GET", wire.PathApproval + t1.Spec.TargetMAC, "", nil, http.StatusUnauthorized},
		{"approval no token, MAC without a task", "GET", wire.PathApproval + "52:54:00:ff:ff:fd", "", nil, http.StatusUnauthorized},
		{"approval other task's token", "GET", wire.PathApproval + t1.Spec.TargetMAC, tok2, nil, http.StatusForbidden},
		{"approval right token", "GET", wire.PathApproval + t1.Spec.TargetMAC, tok1, nil, http.StatusOK},
		{"approval other MAC", "GET", wire.PathApproval + "52:54:00:ff:ff:fe", tok1, nil, http.StatusForbidden},
		{"approval bad MAC", "GET", wire.PathApproval + "zz", tok1, nil, http.StatusBadRequest},
		{"progress no token", "POST", wire.PathProgress, "", wire.Progress{TaskID: t1.ID, Seq: 1, Stage: "partitioning"}, http.StatusUnauthorized},
		{"progress other task's token", "POST", wire.PathProgress, tok2, wire.Progress{TaskID: t1.ID, Seq: 1, Stage: "partitioning"}, http.StatusForbidden},
		{"progress unknown task", "POST", wire.PathProgress, tok1, wire.Progress{TaskID: "00000000-0000-4000-8000-000000000000", Seq: 1, Stage: "partitioning"}, http.StatusForbidden},
		{"progress with the boot token", "POST", wire.PathProgress, boot1, wire.Progress{TaskID: t1.ID, Seq: 1, Stage: "partitioning"}, http.StatusUnauthorized},
		{"failure no token", "POST", wire.PathFailure, "", wire.FailureReport{TaskID: t1.ID, Reason: "x"}, http.StatusUnauthorized},
		{"failure other task's token", "POST", wire.PathFailure, tok1, wire.FailureReport{TaskID: t2.ID, Reason: "x"}, http.StatusForbidden},
		{"failure retried attempt's token", "POST", wire.PathFailure, oldTok3, wire.FailureReport{TaskID: t3.ID, Reason: "x"}, http.StatusUnauthorized},
		{"hardware again after approval (machine rebooted)", "POST", wire.PathHardware, tok4, hw(t4), http.StatusOK},
		{"failure right token", "POST", wire.PathFailure, tok2, wire.FailureReport{TaskID: t2.ID, Reason: "disk on fire", LogLines: []string{"a", "b"}}, http.StatusOK},
		{"failure again after the task ended (replay)", "POST", wire.PathFailure, tok2, wire.FailureReport{TaskID: t2.ID, Reason: "disk on fire"}, http.StatusOK},
		{"progress after the task ended", "POST", wire.PathProgress, tok2, wire.Progress{TaskID: t2.ID, Seq: 1, Stage: "partitioning"}, http.StatusConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := call(t, tc.method, u+tc.path, tc.token, tc.body, nil); got != tc.want {
				t.Errorf("status = %d, want %d", got, tc.want)
			}
		})
	}
	if task, _ := st.GetTask(ctx, t1.ID); task.Status.Status != wire.StatusPendingApproval || task.Hardware == nil || task.Hardware.BootMode != "uefi" {
		t.Errorf("t1 after hardware: %s %+v", task.Status.Status, task.Hardware)
	}
	if task, _ := st.GetTask(ctx, t4.ID); task.Status.Status != wire.StatusInstalling || task.Hardware == nil || task.Hardware.BootMode != "bios" {
		t.Errorf("t4 after hardware again: %s %+v", task.Status.Status, task.Hardware)
	}
	task, _ := st.GetTask(ctx, t2.ID)
	if task.Status.Status != wire.StatusFailed || task.Status.Reason != "agent: disk on fire" {
		t.Errorf("t2 after failure: %s %q", task.Status.Status, task.Status.Reason)
	}
	events, _ := st.Events(ctx, t2.ID)
	if !slices.ContainsFunc(events, func(e store.Event) bool { return e.Kind == "error" && e.Message == "a\nb" }) {
		t.Errorf("t2 events lack the log lines: %+v", events)
	}
}

func TestHappyPathThroughAPI(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	img := addImage(t, st, "ubuntu", "22.04", []byte("a tiny disk image"))
	r := newRegion(t, st, "dc1", nil)
	r.start(t)
	task := createTask(t, st, "dc1")
	mac := task.Spec.TargetMAC
	waitStatus(t, st, task.ID, wire.StatusReady)

	// The iPXE script hands out the task and a boot token, which the
	// agent's first call exchanges for its session.
	code, script := getText(t, r.srv.URL+"/boot/"+mac+".ipxe")
	if code != 200 || !strings.Contains(script, "lpmos_task="+task.ID) {
		t.Fatalf("script %d:\n%s", code, script)
	}
	code, sr := exchange(t, r, bootTokenRE.FindStringSubmatch(script)[1], task)
	token := sr.SessionToken
	if code != 200 || sr.TaskID != task.ID || sr.Status != wire.StatusReady || !strings.HasPrefix(token, "s_"+task.ID+"_") {
		t.Fatalf("session exchange: %d %+v", code, sr)
	}
	// No image before approval.
	if code, _ := getAuth(t, r.srv.URL+"/images/ubuntu/22.04", token); code != http.StatusForbidden {
		t.Fatalf("image before approval: %d", code)
	}

	var hr wire.HardwareResponse
	if code := call(t, "POST", r.srv.URL+wire.PathHardware, token, wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{BootMode: "bios", CPU: wire.CPU{Threads: 4}}}, &hr); code != 200 {
		t.Fatalf("hardware: %d", code)
	}
	if hr.TaskID != task.ID || hr.Status != wire.StatusPendingApproval || hr.Discovered {
		t.Fatalf("hardware answer %+v", hr)
	}

	// Not approved yet: a short long-poll returns the waiting state.
	var ar wire.ApprovalResponse
	call(t, "GET", r.srv.URL+wire.PathApproval+mac+"?wait=100ms", token, nil, &ar)
	if ar.Approved || ar.Status != wire.StatusPendingApproval || ar.Install != nil {
		t.Fatalf("approval before approve: %+v", ar)
	}

	// The operator approves while the agent long-polls.
	go func() {
		time.Sleep(400 * time.Millisecond)
		if _, err := st.Transition(context.Background(), task.ID, wire.StatusApproved, "operator"); err != nil {
			t.Errorf("approve: %v", err)
		}
	}()
	start := time.Now()
	ar = wire.ApprovalResponse{}
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+mac+"?wait=30s", token, nil, &ar); code != 200 {
		t.Fatalf("approval: %d", code)
	}
	took := time.Since(start)
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("long-poll returned after %s", took)
	}
	want := &wire.InstallSpec{
		OSType: "ubuntu", OSVersion: "22.04", ImageURL: r.srv.URL + "/images/ubuntu/22.04",
		ImageSHA256: img.SHA256, ImageSize: img.Size, ImageFormat: "raw", Hostname: "web-1",
		SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA test@lpmos"}, UserData: "#cloud-config\n",
	}
	if !ar.Approved || ar.Status != wire.StatusApproved || ar.Install == nil {
		t.Fatalf("approval: %+v", ar)
	}
	if got := *ar.Install; got.ImageURL != want.ImageURL || got.ImageSHA256 != want.ImageSHA256 || got.ImageSize != want.ImageSize ||
		got.Hostname != want.Hostname || !slices.Equal(got.SSHAuthorizedKeys, want.SSHAuthorizedKeys) || got.UserData != want.UserData || got.ImageFormat != "raw" {
		t.Fatalf("install spec %+v, want %+v", got, *want)
	}
	if code, body := getAuth(t, ar.Install.ImageURL, token); code != 200 || body != "a tiny disk image" {
		t.Fatalf("image download: %d %q", code, body)
	}
	if code, _ := getAuth(t, ar.Install.ImageURL, ""); code != http.StatusUnauthorized {
		t.Fatalf("image download without a session: %d", code)
	}

	stages := []struct {
		stage string
		pct   int
	}{{"partitioning", 20}, {"downloading", 45}, {"installing", 75}, {"configuring", 100}, {"completed", 100}}
	for i, s := range stages {
		var pr wire.ProgressResponse
		if code := call(t, "POST", r.srv.URL+wire.PathProgress, token, wire.Progress{MACAddress: mac, TaskID: task.ID, Seq: int64(i + 1), Stage: s.stage, Percentage: s.pct, Message: s.stage + "..."}, &pr); code != 200 {
			t.Fatalf("progress %s: %d", s.stage, code)
		}
		wantStatus := wire.StatusInstalling
		if s.stage == "completed" {
			wantStatus = wire.StatusCompleted
		}
		if pr.Status != wantStatus || pr.Duplicate {
			t.Fatalf("progress %s answer %+v, want %s", s.stage, pr, wantStatus)
		}
	}
	done, _ := st.GetTask(ctx, task.ID)
	if done.Status.Status != wire.StatusCompleted || done.Progress == nil || done.Progress.Percentage != 100 {
		t.Fatalf("task after completion: %+v", done)
	}
	// The final report repeated (lost answer) is a duplicate, not an error.
	var pr wire.ProgressResponse
	if code := call(t, "POST", r.srv.URL+wire.PathProgress, token, wire.Progress{TaskID: task.ID, Seq: 5, Stage: "completed", Percentage: 100}, &pr); code != 200 || !pr.Duplicate || pr.Status != wire.StatusCompleted {
		t.Fatalf("repeated completion: %d %+v", code, pr)
	}
	// The session only learns the task ended; no image any more; the next
	// PXE boot goes to local disk.
	ar = wire.ApprovalResponse{}
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+mac, token, nil, &ar); code != 200 || ar.Status != wire.StatusCompleted || ar.Install != nil {
		t.Errorf("approval after completion: %d %+v", code, ar)
	}
	if code, _ := getAuth(t, r.srv.URL+"/images/ubuntu/22.04", token); code != http.StatusForbidden {
		t.Errorf("image after completion: %d", code)
	}
	if _, script := getText(t, r.srv.URL+"/boot/"+mac+".ipxe"); !strings.Contains(script, "\nexit 1\n") || strings.Contains(script, "kernel") {
		t.Errorf("script after completion:\n%s", script)
	}
}

func TestProgressRules(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	addImage(t, st, "ubuntu", "22.04", []byte("img"))
	r := newRegion(t, st, "dc1", nil)
	approved := createTask(t, st, "dc1")
	advance(t, r, approved.ID, wire.StatusApproved)
	ready := createTask(t, st, "dc1")
	advance(t, r, ready.ID, wire.StatusPendingApproval)
	tokA, tokR := sessionFor(t, st, approved.ID), sessionFor(t, st, ready.ID)
	future := time.Now().Add(MaxSeqSkew + time.Minute).UnixMicro()

	tests := []struct {
		name    string
		token   string
		p       wire.Progress
		want    int
		dup     bool
		wantErr string
	}{
		{"before approval", tokR, wire.Progress{TaskID: ready.ID, Seq: 1, Stage: "partitioning", Percentage: 1}, http.StatusConflict, false, "pending_approval"},
		{"jump to completed", tokA, wire.Progress{TaskID: approved.ID, Seq: 1, Stage: "completed", Percentage: 100}, http.StatusConflict, false, "expected stage partitioning"},
		{"seq beyond the server clock", tokA, wire.Progress{TaskID: approved.ID, Seq: 9223372036854775807, Stage: "partitioning"}, http.StatusBadRequest, false, "server clock"},
		{"seq just beyond the skew", tokA, wire.Progress{TaskID: approved.ID, Seq: future, Stage: "partitioning"}, http.StatusBadRequest, false, "server clock"},
		{"seq zero", tokA, wire.Progress{TaskID: approved.ID, Stage: "partitioning"}, http.StatusBadRequest, false, "seq"},
		{"first", tokA, wire.Progress{TaskID: approved.ID, Seq: 1, Stage: "partitioning", Percentage: 10}, 200, false, ""},
		{"by MAC only", tokA, wire.Progress{MACAddress: approved.Spec.TargetMAC, Seq: 2, Stage: "partitioning", Percentage: 15}, 200, false, ""},
		{"by the token only", tokA, wire.Progress{Seq: 3, Stage: "partitioning", Percentage: 16}, 200, false, ""},
		{"duplicate", tokA, wire.Progress{TaskID: approved.ID, Seq: 3, Stage: "partitioning", Percentage: 16}, 200, true, ""},
		{"regression", tokA, wire.Progress{TaskID: approved.ID, Seq: 1, Stage: "partitioning", Percentage: 10}, http.StatusConflict, false, "regression"},
		{"percentage back", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Stage: "partitioning", Percentage: 12}, http.StatusConflict, false, "expected stage partitioning"},
		{"stage skipped", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Stage: "configuring", Percentage: 95}, http.StatusConflict, false, "expected stage downloading"},
		{"percentage out of range", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Stage: "downloading", Percentage: 101}, http.StatusBadRequest, false, "percentage"},
		{"percentage outside the stage", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Stage: "downloading", Percentage: 70}, http.StatusBadRequest, false, "20-60"},
		{"unknown stage", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Stage: "dancing", Percentage: 30}, http.StatusBadRequest, false, "stage"},
		{"no stage", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Percentage: 30}, http.StatusBadRequest, false, "stage"},
		{"other task's id", tokA, wire.Progress{TaskID: ready.ID, Seq: 4, Stage: "downloading", Percentage: 30}, http.StatusForbidden, false, "belongs to task"},
		{"next", tokA, wire.Progress{TaskID: approved.ID, Seq: 4, Stage: "downloading", Percentage: 30}, 200, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pr wire.ProgressResponse
			var e wire.Error
			var out any = &pr
			if tc.want >= 400 {
				out = &e
			}
			if got := call(t, "POST", r.srv.URL+wire.PathProgress, tc.token, tc.p, out); got != tc.want {
				t.Fatalf("status = %d (%s), want %d", got, e.Error, tc.want)
			}
			if tc.want == 200 && (pr.Duplicate != tc.dup || pr.Status != wire.StatusInstalling) {
				t.Errorf("answer %+v, want duplicate=%v installing", pr, tc.dup)
			}
			if !strings.Contains(e.Error, tc.wantErr) {
				t.Errorf("error %q lacks %q", e.Error, tc.wantErr)
			}
		})
	}
	task, _ := st.GetTask(ctx, approved.ID)
	if task.Progress == nil || task.Progress.Seq != 4 || task.Progress.Stage != "downloading" || task.Progress.Run != 1 {
		t.Errorf("stored progress %+v", task.Progress)
	}
}

func TestBadBodies(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", nil)
	task := createTask(t, st, "dc1")
	advance(t, r, task.ID, wire.StatusReady)
	tok := sessionFor(t, st, task.ID)
	big := []byte(`{"task_id":"` + task.ID + `","stage":"x","message":"` + strings.Repeat("a", MaxBodyBytes) + `"}`)
	tests := []struct {
		name string
		path string
		body []byte
		want int
	}{
		{"progress over 1 MiB", wire.PathProgress, big, http.StatusRequestEntityTooLarge},
		{"hardware over 1 MiB", wire.PathHardware, []byte(`{"mac_address":"` + strings.Repeat("a", MaxBodyBytes) + `"}`), http.StatusRequestEntityTooLarge},
		{"failure over 1 MiB", wire.PathFailure, big, http.StatusRequestEntityTooLarge},
		{"malformed JSON", wire.PathProgress, []byte(`{"task_id": `), http.StatusBadRequest},
		{"not JSON", wire.PathHardware, []byte(`hello`), http.StatusBadRequest},
		{"empty body", wire.PathHardware, []byte(``), http.StatusBadRequest},
		{"unknown field", wire.PathProgress, []byte(`{"task_id":"` + task.ID + `","stage":"x","sneaky":1}`), http.StatusBadRequest},
		{"wrong type", wire.PathProgress, []byte(`{"task_id":"` + task.ID + `","stage":"x","seq":"one"}`), http.StatusBadRequest},
		{"trailing data", wire.PathFailure, []byte(`{"task_id":"` + task.ID + `","reason":"x"} {}`), http.StatusBadRequest},
		{"failure without reason", wire.PathFailure, []byte(`{"task_id":"` + task.ID + `"}`), http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := call(t, "POST", r.srv.URL+tc.path, tok, tc.body, nil); got != tc.want {
				t.Errorf("status = %d, want %d", got, tc.want)
			}
		})
	}
	if got := call(t, "GET", r.srv.URL+"/api/v1/agent/nope", tok, nil, nil); got != 404 {
		t.Errorf("unknown path: %d", got)
	}
	if got := call(t, "GET", r.srv.URL+wire.PathProgress, tok, nil, nil); got != 405 {
		t.Errorf("wrong method: %d", got)
	}
	if got := call(t, "GET", r.srv.URL+wire.PathApproval+task.Spec.TargetMAC+"?wait=soon", tok, nil, nil); got != 400 {
		t.Errorf("bad wait: %d", got)
	}
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	on := newRegion(t, st, "dc1", nil)
	off := newRegion(t, st, "dc2", func(c *Config) { c.DiscoverUnknown = false })
	active := createTask(t, st, "dc1")
	completed := createTask(t, st, "dc1")
	advance(t, on, completed.ID, wire.StatusCompleted)

	unknown := nextMAC()
	report := func(mac string) wire.HardwareReport {
		return wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{BootMode: "uefi", DMI: wire.DMI{Vendor: "QEMU"}}}
	}
	tests := []struct {
		name       string
		r          *testRegion
		mac        string
		want       int
		discovered bool
	}{
		{"unknown MAC, discovery on", on, unknown, 200, true},
		{"again (refresh)", on, unknown, 200, true},
		{"unknown MAC in upper case with dashes", on, strings.ToUpper(strings.ReplaceAll(nextMAC(), ":", "-")), 200, true},
		{"unknown MAC, discovery off", off, nextMAC(), http.StatusNotFound, false},
		{"MAC with an active task needs its token", on, active.Spec.TargetMAC, http.StatusUnauthorized, false},
		{"MAC whose task completed", on, completed.Spec.TargetMAC, 200, true},
		{"bad MAC", on, "not-a-mac", http.StatusBadRequest, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hr wire.HardwareResponse
			if got := call(t, "POST", tc.r.srv.URL+wire.PathHardware, "", report(tc.mac), &hr); got != tc.want {
				t.Fatalf("status = %d, want %d", got, tc.want)
			}
			if hr.Discovered != tc.discovered || tc.discovered != strings.HasPrefix(hr.SessionToken, "d_") {
				t.Errorf("answer %+v", hr)
			}
			if tc.discovered {
				mac, _ := store.ParseMAC(tc.mac)
				m, err := st.GetMachine(ctx, mac)
				if err != nil || m.RegionID != "dc1" || m.Hardware == nil || m.Hardware.DMI.Vendor != "QEMU" {
					t.Errorf("machine %+v, %v", m, err)
				}
			}
		})
	}
}

func TestBootScriptPerState(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", func(c *Config) { c.ExtraKernelArgs = []string{"lpmos_poweroff=1"} })
	noDiscovery := newRegion(t, st, "dc1", func(c *Config) { c.DiscoverUnknown = false })
	other := newRegion(t, st, "dc9", nil)

	tests := []struct {
		status wire.Status
		want   pxe.Action
	}{
		{wire.StatusPending, pxe.ActionInstall}, // claimed on the spot
		{wire.StatusReady, pxe.ActionInstall},
		{wire.StatusPendingApproval, pxe.ActionInstall},
		{wire.StatusApproved, pxe.ActionInstall},
		{wire.StatusInstalling, pxe.ActionInstall},
		{wire.StatusStalled, pxe.ActionInstall},
		{wire.StatusCompleted, pxe.ActionLocal},
		{wire.StatusFailed, pxe.ActionLocal},
		{wire.StatusCancelled, pxe.ActionLocal},
	}
	for _, tc := range tests {
		t.Run(string(tc.status), func(t *testing.T) {
			task := createTask(t, st, "dc1")
			advance(t, r, task.ID, tc.status)
			code, script := getText(t, r.srv.URL+"/boot/"+task.Spec.TargetMAC+".ipxe")
			if code != 200 || !strings.HasPrefix(script, "#!ipxe\n") {
				t.Fatalf("script %d:\n%s", code, script)
			}
			switch tc.want {
			case pxe.ActionInstall:
				for _, s := range []string{
					"lpmos_task=" + task.ID, "lpmos_token=b_" + task.ID + "_", "lpmos_client=" + r.srv.URL + " ",
					"ip=${ip}::${gateway}:${netmask}:::off", r.srv.URL + "/boot/files/vmlinuz", r.srv.URL + "/boot/files/initramfs.img",
					"lpmos_poweroff=1",
				} {
					if !strings.Contains(script, s) {
						t.Errorf("script lacks %q:\n%s", s, script)
					}
				}
				if code, sr := exchange(t, r, bootTokenRE.FindStringSubmatch(script)[1], task); code != 200 || sr.SessionToken == "" {
					t.Errorf("the boot token in the script is not redeemable: %d %+v", code, sr)
				}
				if got, _ := st.GetTask(ctx, task.ID); got.Status.Status == wire.StatusPending {
					t.Error("pending task was not claimed by the boot")
				}
			case pxe.ActionLocal:
				if !strings.Contains(script, "\nexit 1\n") || strings.Contains(script, "kernel ") || strings.Contains(script, "lpmos_token") {
					t.Errorf("want exit to local disk:\n%s", script)
				}
			}
			// The other region never boots this machine.
			if _, script := getText(t, other.srv.URL+"/boot/"+task.Spec.TargetMAC+".ipxe"); strings.Contains(script, "kernel ") {
				t.Errorf("region dc9 boots a dc1 task:\n%s", script)
			}
		})
	}

	t.Run("unknown MAC", func(t *testing.T) {
		mac := nextMAC()
		_, script := getText(t, r.srv.URL+"/boot/"+mac+".ipxe")
		if !strings.Contains(script, "discovery") || !strings.Contains(script, "kernel ") || strings.Contains(script, "lpmos_task") || strings.Contains(script, "lpmos_token") {
			t.Errorf("discovery on:\n%s", script)
		}
		_, script = getText(t, noDiscovery.srv.URL+"/boot/"+mac+".ipxe")
		if !strings.Contains(script, "\nexit 1\n") || strings.Contains(script, "kernel ") {
			t.Errorf("discovery off:\n%s", script)
		}
	})

	t.Run("each script mints a new boot token, superseding the previous one", func(t *testing.T) {
		task := createTask(t, st, "dc1")
		advance(t, r, task.ID, wire.StatusPendingApproval)
		first := bootToken(t, r, task.Spec.TargetMAC)
		second := bootToken(t, noDiscovery, task.Spec.TargetMAC) // another process of the region
		if first == second {
			t.Fatal("two scripts carry the same boot token")
		}
		if code, _ := exchange(t, r, first, task); code != http.StatusUnauthorized {
			t.Errorf("superseded boot token: %d, want 401", code)
		}
		if code, _ := exchange(t, r, second, task); code != 200 {
			t.Errorf("newest boot token: %d", code)
		}
	})

	t.Run("kernel served with Range", func(t *testing.T) {
		req, _ := http.NewRequest("GET", r.srv.URL+"/boot/files/vmlinuz", nil)
		req.Header.Set("Range", "bytes=7-10")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 16)
		n, _ := resp.Body.Read(buf)
		if resp.StatusCode != http.StatusPartialContent || string(buf[:n]) != "0123" {
			t.Errorf("range: %d %q", resp.StatusCode, buf[:n])
		}
	})
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", nil)
	strict := newRegion(t, st, "dc1", func(c *Config) { c.DiscoverUnknown = false })
	mk := func(region string, s wire.Status) string {
		task := createTask(t, st, region)
		owner := r
		if region != "dc1" {
			owner = newRegion(t, st, region, nil)
		}
		advance(t, owner, task.ID, s)
		return task.Spec.TargetMAC
	}
	tests := []struct {
		name             string
		mac              string
		discover, strict bool
	}{
		{"active task", mk("dc1", wire.StatusReady), true, true},
		{"installing task", mk("dc1", wire.StatusInstalling), true, true},
		{"completed task", mk("dc1", wire.StatusCompleted), true, true},
		{"failed task", mk("dc1", wire.StatusFailed), true, false},
		{"task of another region", mk("dc2", wire.StatusReady), false, false},
		{"unknown", nextMAC(), true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hw, _ := net.ParseMAC(tc.mac)
			if got, err := r.Allowed(ctx, hw); err != nil || got != tc.discover {
				t.Errorf("discover on: %v, %v; want %v", got, err, tc.discover)
			}
			if got, err := strict.Allowed(ctx, hw); err != nil || got != tc.strict {
				t.Errorf("discover off: %v, %v; want %v", got, err, tc.strict)
			}
		})
	}
}

func TestImageServedWithRange(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	addImage(t, st, "debian", "12", data)
	r := newRegion(t, st, "dc1", nil)

	// A second image whose source is an http URL is proxied, Range included.
	origin := http.NewServeMux()
	origin.HandleFunc("/debian-13.img", func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "" {
			t.Error("the agent's token leaked to the image origin")
		}
		http.ServeContent(w, req, "", time.Unix(1700000000, 0), strings.NewReader(string(data)))
	})
	osrv := newHTTPServer(t, origin)
	img := addImage(t, st, "debian", "13", data)
	img.Source = osrv + "/debian-13.img"
	if err := st.PutImage(context.Background(), img); err != nil {
		t.Fatal(err)
	}

	// Images go only to the session of an approved task for that image.
	sessions := map[string]string{}
	for _, ver := range []string{"12", "13"} {
		task, err := st.CreateTask(context.Background(), store.Spec{RegionID: "dc1", TargetMAC: nextMAC(), OSType: "debian", OSVersion: ver})
		if err != nil {
			t.Fatal(err)
		}
		advance(t, r, task.ID, wire.StatusApproved)
		sessions[ver] = sessionFor(t, st, task.ID)
	}
	for _, ver := range []string{"12", "13"} {
		u := r.srv.URL + "/images/debian/" + ver
		tests := []struct {
			rng       string
			wantCode  int
			from, end int
		}{
			{"", 200, 0, len(data)},
			{"bytes=1000-1999", 206, 1000, 2000},
			{"bytes=99990-", 206, 99990, len(data)},
			{"bytes=200000-", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		}
		for _, tc := range tests {
			t.Run(ver+" "+tc.rng, func(t *testing.T) {
				req, _ := http.NewRequest("GET", u, nil)
				req.Header.Set("Authorization", "Bearer "+sessions[ver])
				if tc.rng != "" {
					req.Header.Set("Range", tc.rng)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body := readAll(t, resp)
				if resp.StatusCode != tc.wantCode {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
				}
				if tc.wantCode < 300 && string(body) != string(data[tc.from:tc.end]) {
					t.Errorf("got %d bytes, want bytes %d-%d", len(body), tc.from, tc.end)
				}
			})
		}
	}
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/images/debian/12", "", http.StatusUnauthorized},
		{"made-up token", "/images/debian/12", "Zm9v", http.StatusUnauthorized},
		{"HEAD without token", "/images/debian/12", "", http.StatusUnauthorized},
		{"another task's image", "/images/debian/13", sessions["12"], http.StatusForbidden},
		{"image of no task", "/images/debian/99", sessions["12"], http.StatusForbidden},
	} {
		method := "GET"
		if strings.HasPrefix(tc.name, "HEAD") {
			method = "HEAD"
		}
		req, _ := http.NewRequest(method, r.srv.URL+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	// If-Range with the ETag resumes; with a stale validator the whole file comes.
	req, _ := http.NewRequest("GET", r.srv.URL+"/images/debian/12", nil)
	req.Header.Set("Authorization", "Bearer "+sessions["12"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	for _, tc := range []struct {
		ifRange string
		want    int
	}{{etag, 206}, {`"stale"`, 200}} {
		req, _ := http.NewRequest("GET", r.srv.URL+"/images/debian/12", nil)
		req.Header.Set("Range", "bytes=10-")
		req.Header.Set("If-Range", tc.ifRange)
		req.Header.Set("Authorization", "Bearer "+sessions["12"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("If-Range %s: %d, want %d", tc.ifRange, resp.StatusCode, tc.want)
		}
	}
}

func TestMissingImageFailsAtApproval(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	const reason = "no image for ubuntu 22.04: lpmos image add ubuntu 22.04 <file-or-url>"

	t.Run("agent asks", func(t *testing.T) {
		r := newRegion(t, st, "dc1", nil)
		task := createTask(t, st, "dc1")
		advance(t, r, task.ID, wire.StatusApproved)
		var ar wire.ApprovalResponse
		if code := call(t, "GET", r.srv.URL+wire.PathApproval+task.Spec.TargetMAC, sessionFor(t, st, task.ID), nil, &ar); code != 200 {
			t.Fatalf("approval: %d", code)
		}
		if ar.Approved || ar.Install != nil || ar.Status != wire.StatusFailed || ar.Reason != reason {
			t.Fatalf("approval answer %+v", ar)
		}
		if got := waitStatus(t, st, task.ID, wire.StatusFailed); got.Status.Reason != reason {
			t.Errorf("reason %q", got.Status.Reason)
		}
	})
	t.Run("region sees the approval", func(t *testing.T) {
		r := newRegion(t, st, "dc2", nil)
		r.start(t)
		task := createTask(t, st, "dc2")
		advance(t, r, task.ID, wire.StatusPendingApproval)
		if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
			t.Fatal(err)
		}
		if got := waitStatus(t, st, task.ID, wire.StatusFailed); got.Status.Reason != reason {
			t.Errorf("reason %q", got.Status.Reason)
		}
	})
	t.Run("image file gone from the region", func(t *testing.T) {
		r := newRegion(t, st, "dc3", nil)
		img := addImage(t, st, "rocky", "9", []byte("x"))
		if err := os.Remove(img.Source); err != nil {
			t.Fatal(err)
		}
		task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc3", TargetMAC: nextMAC(), OSType: "rocky", OSVersion: "9"})
		if err != nil {
			t.Fatal(err)
		}
		advance(t, r, task.ID, wire.StatusApproved)
		var ar wire.ApprovalResponse
		call(t, "GET", r.srv.URL+wire.PathApproval+task.Spec.TargetMAC, sessionFor(t, st, task.ID), nil, &ar)
		if ar.Status != wire.StatusFailed || !strings.Contains(ar.Reason, "not readable on region dc3") {
			t.Errorf("answer %+v", ar)
		}
	})
}

func TestStallAndRecover(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	addImage(t, st, "ubuntu", "22.04", []byte("img"))
	r := newRegion(t, st, "dc1", func(c *Config) { c.StallAfter = 400 * time.Millisecond })
	r.start(t)
	task, tok := approvedWithSession(t, st, r)
	if code := call(t, "POST", r.srv.URL+wire.PathProgress, tok, wire.Progress{TaskID: task.ID, Seq: 1, Stage: "partitioning", Percentage: 5}, nil); code != 200 {
		t.Fatalf("progress: %d", code)
	}
	// Reports keep it installing.
	for i := range 4 {
		time.Sleep(150 * time.Millisecond)
		var pr wire.ProgressResponse
		call(t, "POST", r.srv.URL+wire.PathProgress, tok, wire.Progress{TaskID: task.ID, Seq: int64(i + 2), Stage: "downloading", Percentage: 20 + i}, &pr)
		if pr.Status != wire.StatusInstalling {
			t.Fatalf("report %d: %+v", i, pr)
		}
	}
	start := time.Now()
	stalled := waitStatus(t, st, task.ID, wire.StatusStalled)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("stalled after only %s of silence", took)
	}
	if !strings.Contains(stalled.Status.Reason, "no progress report") {
		t.Errorf("stall reason %q", stalled.Status.Reason)
	}
	// The agent speaks again: back to installing.
	var pr wire.ProgressResponse
	if code := call(t, "POST", r.srv.URL+wire.PathProgress, tok, wire.Progress{TaskID: task.ID, Seq: 10, Stage: "installing", Percentage: 70}, &pr); code != 200 || pr.Status != wire.StatusInstalling {
		t.Fatalf("report after stall: %d %+v", code, pr)
	}
	// Approval of a stalled task still hands out the install spec. (The
	// stage change was answered on acceptance: written right after.)
	if err := r.fast.pp.WaitWritten(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetTask(ctx, task.ID); got.Status.Status != wire.StatusInstalling {
		t.Errorf("status after report: %s", got.Status.Status)
	}
	waitStatus(t, st, task.ID, wire.StatusStalled)
	var ar wire.ApprovalResponse
	call(t, "GET", r.srv.URL+wire.PathApproval+task.Spec.TargetMAC, tok, nil, &ar)
	if !ar.Approved || ar.Install == nil || ar.Status != wire.StatusStalled {
		t.Errorf("approval of a stalled task: %+v", ar)
	}
}

func TestStartServesAndReportsState(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	port := storetest.FreePort(t)
	addr := "127.0.0.1:" + itoa(port)
	r, err := New(Config{Store: st, RegionID: "dc1", Addr: addr, PublicURL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.State(); s[ServiceBootHTTP].State != StateDisabled || s[ServiceAgentAPI].State != StateStopped {
		t.Errorf("state before start: %+v", s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Start(ctx) }()
	waitFor(t, 10*time.Second, "all services running", func() bool {
		s := r.State()
		return s[ServiceAgentAPI].State == StateRunning && s[ServiceTaskSync].State == StateRunning && s[ServiceRegistration].State == StateRunning
	})
	var health struct {
		Status   string                  `json:"status"`
		Region   string                  `json:"region"`
		Services map[string]ServiceState `json:"services"`
	}
	if code := call(t, "GET", "http://"+addr+"/healthz", "", nil, &health); code != 200 || health.Status != "ok" || health.Region != "dc1" || health.Services[ServiceAgentAPI].State != StateRunning {
		t.Errorf("healthz %d %+v", code, health)
	}
	if code := call(t, "GET", "http://"+addr+"/boot/52:54:00:00:00:01.ipxe", "", nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("boot without boot dir: %d", code)
	}
	// A long-poll in flight does not hold up shutdown.
	task := createTask(t, st, "dc1")
	waitStatus(t, st, task.ID, wire.StatusReady)
	pollDone := make(chan int, 1)
	sess := sessionFor(t, st, task.ID)
	go func() {
		// Sent also when call fails the test (t.Fatal ends this goroutine
		// only): the wait below then ends instead of hanging the package
		// until its timeout, as it did on a loaded box.
		code := 0
		defer func() { pollDone <- code }()
		code = call(t, "GET", "http://"+addr+wire.PathApproval+task.Spec.TargetMAC+"?wait=60s", sess, nil, nil)
	}()
	time.Sleep(200 * time.Millisecond)
	if err := r.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	stopAt := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Start: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return")
	}
	if took := time.Since(stopAt); took > 3*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	if code := <-pollDone; code != 200 {
		t.Errorf("long-poll at shutdown: %d", code)
	}
	if s := r.State(); s[ServiceAgentAPI].State != StateStopped || s[ServiceTaskSync].State != StateStopped {
		t.Errorf("state after stop: %+v", s)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	for _, bad := range []Config{
		{RegionID: "dc1", PublicURL: "http://x"},
		{Store: st, PublicURL: "http://x"},
		{Store: st, RegionID: "dc1"},
		{Store: st, RegionID: "dc1", PublicURL: "10.0.0.1:8081"},
		{Store: st, RegionID: "dc1", PublicURL: "http://x", BootDir: "/tmp", ExtraKernelArgs: []string{"a b"}},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

func TestLeases(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	l := NewLeases(st, "dc1")
	m1, _ := net.ParseMAC("52:54:00:aa:00:01")
	m2, _ := net.ParseMAC("52:54:00:aa:00:02")
	if _, ok, err := l.Get(ctx, m1); ok || err != nil {
		t.Fatalf("empty Get: %v %v", ok, err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	for _, ls := range []pxe.Lease{{MAC: m2, IP: net.IPv4(10, 55, 0, 101), Expires: exp}, {MAC: m1, IP: net.IPv4(10, 55, 0, 100), Expires: exp}} {
		if err := l.Put(ctx, ls); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := l.Get(ctx, m1)
	if err != nil || !ok || !got.IP.Equal(net.IPv4(10, 55, 0, 100)) || !got.Expires.Equal(exp) {
		t.Fatalf("Get: %+v %v %v", got, ok, err)
	}
	all, err := l.List(ctx)
	if err != nil || len(all) != 2 || all[0].MAC.String() != m1.String() {
		t.Fatalf("List: %+v %v", all, err)
	}
	if err := l.Put(ctx, pxe.Lease{MAC: m1, IP: net.ParseIP("fd55::1")}); err == nil {
		t.Error("IPv6 lease accepted")
	}
}

// An install whose within-stage reports are answered and not yet written
// (coalesced up to the persist interval, or etcd's writes lag) is not
// stalled: the stall check counts the reports this region answered.
func TestNoStallWhileAnsweredReportsAreUnwritten(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	addImage(t, st, "ubuntu", "22.04", []byte("img"))
	r := newRegion(t, st, "dc1", func(c *Config) { c.StallAfter = 400 * time.Millisecond })
	r.start(t)
	task, tok := approvedWithSession(t, st, r)
	for i, stage := range []string{"partitioning", "downloading"} { // stage changes: written
		if code := call(t, "POST", r.srv.URL+wire.PathProgress, tok, wire.Progress{TaskID: task.ID, Seq: int64(i + 1), Stage: stage, Percentage: 5 + 15*i}, nil); code != 200 {
			t.Fatalf("progress %s: %d", stage, code)
		}
	}
	if err := r.fast.pp.WaitWritten(context.Background(), task.ID); err != nil {
		t.Fatal(err)
	}
	// From here on the within-stage reports stay unwritten (as when etcd's
	// writes lag): only their answers say the agent is alive.
	r.fast.pp.SetPersistInterval(time.Hour)
	for i := range 10 { // 1.5 s: well past the stall delay since the stored report
		time.Sleep(150 * time.Millisecond)
		var pr wire.ProgressResponse
		if code := call(t, "POST", r.srv.URL+wire.PathProgress, tok, wire.Progress{TaskID: task.ID, Seq: int64(i + 3), Stage: "downloading", Percentage: 21 + i}, &pr); code != 200 || pr.Status != wire.StatusInstalling {
			t.Fatalf("report %d: %d %+v", i, code, pr)
		}
	}
	got, err := st.GetTask(context.Background(), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Status != wire.StatusInstalling || got.Progress == nil || got.Progress.Stage != "downloading" || got.Progress.Percentage != 20 {
		t.Fatalf("want installing with the first downloading report stored only (a stall and its recovery write the latest): %s %+v", got.Status.Status, got.Progress)
	}
	// Silence: now it stalls.
	stalled := waitStatus(t, st, task.ID, wire.StatusStalled)
	if !strings.Contains(stalled.Status.Reason, "no progress report") {
		t.Errorf("stall reason %q", stalled.Status.Reason)
	}
}
