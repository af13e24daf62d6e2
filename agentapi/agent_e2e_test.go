package agentapi

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/runner"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// TestRealAgentAgainstRegion runs the agent's own flow (runner + client,
// demo install: the image is streamed and verified, nothing written) with
// the task id and boot token it would read from the iPXE kernel line.
func TestRealAgentAgainstRegion(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	addImage(t, st, "ubuntu", "22.04", make([]byte, 300_000))
	r := newRegion(t, st, "dc1", nil)
	r.start(t)
	task := createTask(t, st, "dc1")
	waitStatus(t, st, task.ID, wire.StatusReady)

	_, script := getText(t, r.srv.URL+"/boot/"+task.Spec.TargetMAC+".ipxe")
	m := regexp.MustCompile(`lpmos_client=(\S+) lpmos_task=(\S+) lpmos_token=(\S+) `).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no agent parameters in script:\n%s", script)
	}
	log := slog.New(slog.DiscardHandler)
	run := &runner.Runner{
		API:          client.New(client.Options{BaseURL: m[1], Logger: log}),
		BootToken:    m[3],
		Log:          log,
		Hardware:     func() (wire.Hardware, error) { return wire.Hardware{BootMode: "bios", CPU: wire.CPU{Threads: 2}}, nil },
		MAC:          task.Spec.TargetMAC,
		TaskID:       m[2],
		ApprovalWait: 5 * time.Second,
		Install:      install.Options{ProgressInterval: time.Millisecond},
	}
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()

	waitStatus(t, st, task.ID, wire.StatusPendingApproval)
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not finish")
	}
	final := waitStatus(t, st, task.ID, wire.StatusCompleted)
	if final.Hardware == nil || final.Hardware.CPU.Threads != 2 {
		t.Errorf("hardware %+v", final.Hardware)
	}
	events, _ := st.Events(ctx, task.ID)
	var stages []string
	for _, e := range events {
		if e.Kind == "stage" {
			stages = append(stages, e.Stage)
		}
	}
	for _, s := range []string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring, wire.StageCompleted} {
		if !slices.Contains(stages, s) {
			t.Errorf("stage %s missing from %v", s, stages)
		}
	}
}

// liveAgent starts the real agent flow (runner + client, demo install) for
// mac against r until the test ends; its result arrives on the channel.
func liveAgent(t *testing.T, r *testRegion, mac, taskID, boot string) <-chan error {
	t.Helper()
	return liveAgentAt(t, r.srv.URL, mac, taskID, boot)
}

// liveAgentAt is liveAgent for a region reached at base.
func liveAgentAt(t *testing.T, base, mac, taskID, boot string) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(testLog{t}, nil))
	fast := retry.Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	run := &runner.Runner{
		API:              client.New(client.Options{BaseURL: base, Logger: log, Backoff: fast}),
		BootToken:        boot,
		StayAfterFailure: true,
		Log:              log,
		Hardware:         func() (wire.Hardware, error) { return wire.Hardware{BootMode: "uefi", CPU: wire.CPU{Threads: 8}}, nil },
		MAC:              mac,
		TaskID:           taskID,
		ApprovalWait:     2 * time.Second,
		Backoff:          fast,
		Install:          install.Options{ProgressInterval: time.Millisecond, Backoff: fast, MaxFailures: 1},
	}
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	return done
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitAgent(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not finish")
	}
}

func authMessages(t *testing.T, st *store.Store, id string) string {
	t.Helper()
	events, err := st.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range events {
		if e.Kind == "auth" {
			b.WriteString(e.Message + "\n")
		}
	}
	return b.String()
}

// TestDiscoveredAgentPicksUpTask: a machine booted for discovery keeps its
// agent running; when an operator creates its task, that agent is handed
// the task within seconds, without a reboot, the task starts with the
// hardware already known (pending_approval at once) and the machine
// leaves the discovered list; approved, it installs.
func TestDiscoveredAgentPicksUpTask(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	addImage(t, st, "ubuntu", "22.04", make([]byte, 100_000))
	r := newRegion(t, st, "dc1", nil)
	r.start(t)
	mac := nextMAC()
	done := liveAgent(t, r, mac, "", "")
	waitFor(t, 10*time.Second, "the machine to be discovered", func() bool {
		m, err := st.GetMachine(ctx, mac)
		return err == nil && m.Hardware != nil && m.Hardware.CPU.Threads == 8
	})
	time.Sleep(300 * time.Millisecond) // the agent is long-polling now

	created := time.Now()
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04", UserData: "#cloud-config\n"})
	if err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, st, task.ID, wire.StatusPendingApproval)
	took := time.Since(created)
	t.Logf("task created -> pending_approval through the discovered machine's running agent: %s", took.Round(time.Millisecond))
	if got.Hardware == nil || got.Hardware.CPU.Threads != 8 || got.Hardware.BootMode != "uefi" {
		t.Errorf("task hardware %+v, want the discovered one", got.Hardware)
	}
	if _, err := st.GetMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("machine still in the discovered list: %v", err)
	}
	if msgs := authMessages(t, st, task.ID); !strings.Contains(msgs, "waiting agent of "+mac) {
		t.Errorf("no hand-over event: %q", msgs)
	}
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, done)
	waitStatus(t, st, task.ID, wire.StatusCompleted)
}

// TestLiveAgentPicksUpRetry: the agent of a failed install stays up with
// its session; a retry (new attempt) is handed to it within seconds with
// a fresh session, and it installs without a reboot.
func TestLiveAgentPicksUpRetry(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	img := addImage(t, st, "ubuntu", "22.04", make([]byte, 100_000))
	good := img.SHA256
	img.SHA256 = strings.Repeat("0", 64) // attempt 1 fails verification
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	r := newRegion(t, st, "dc1", nil)
	r.start(t)
	task := createTask(t, st, "dc1")
	waitStatus(t, st, task.ID, wire.StatusReady)
	done := liveAgent(t, r, task.Spec.TargetMAC, task.ID, bootToken(t, r, task.Spec.TargetMAC))
	waitStatus(t, st, task.ID, wire.StatusPendingApproval)
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
	failed := waitStatus(t, st, task.ID, wire.StatusFailed)
	if !strings.Contains(failed.Status.Reason, "sha256") && !strings.Contains(failed.Status.Reason, "checksum") {
		t.Errorf("failure reason %q", failed.Status.Reason)
	}
	select {
	case err := <-done:
		t.Fatalf("the agent exited after the failure: %v", err)
	case <-time.After(500 * time.Millisecond):
	}

	img.SHA256 = good
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	retried := time.Now()
	if _, err := st.Transition(ctx, task.ID, wire.StatusPending, "retry"); err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, st, task.ID, wire.StatusPendingApproval)
	took := time.Since(retried)
	t.Logf("retry -> pending_approval through the failed install's running agent: %s", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("retry picked up after %s", took)
	}
	if got.Status.Attempt != 2 || got.Hardware == nil || got.Hardware.CPU.Threads != 8 {
		t.Errorf("after pick-up: attempt %d hardware %+v", got.Status.Attempt, got.Hardware)
	}
	if msgs := authMessages(t, st, task.ID); !strings.Contains(msgs, "picked up attempt 2") {
		t.Errorf("no hand-over event: %q", msgs)
	}
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, done)
	final := waitStatus(t, st, task.ID, wire.StatusCompleted)
	if final.Progress == nil || final.Progress.Attempt != 2 || final.Progress.Stage != wire.StageCompleted {
		t.Errorf("final progress %+v", final.Progress)
	}
}
