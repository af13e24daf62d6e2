package agentapi

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/runner"
	"github.com/lpmos/lpmos/agent/wire"
)

// TestRealAgentAgainstRegion runs the agent's own flow (runner + client,
// demo install: the image is streamed and verified, nothing written) with
// the task id and token it would read from the iPXE kernel line.
func TestRealAgentAgainstRegion(t *testing.T) {
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
		API:          client.New(client.Options{BaseURL: m[1], Token: m[3], Logger: log}),
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
