package ui_test

import (
	"context"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
)

// The partition table the agent reports with its last configuring report
// is kept under the task and returned by GET /api/v1/tasks/{id}; later
// reports without one do not erase it, and the progress record stays small.
func TestTaskShowsPartitionsLeftOnDisk(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	ctx := context.Background()
	var task store.Task
	if code := e.do(t, "POST", "/api/v1/tasks", createBody, &task); code != 201 {
		t.Fatalf("create: %d", code)
	}
	for _, to := range []wire.Status{wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved} {
		if _, err := e.store.Transition(ctx, task.ID, to, "test"); err != nil {
			t.Fatal(err)
		}
	}
	parts := []wire.Partition{
		{Number: 1, Name: "EFI", Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", StartBytes: 1 << 20, SizeBytes: 512 << 20, FS: "vfat", Role: "esp"},
		{Number: 2, Name: "boot", Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", StartBytes: 513 << 20, SizeBytes: 1 << 30, FS: "ext4", Role: "boot"},
		{Number: 3, Name: "root", Type: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", StartBytes: 1537 << 20, SizeBytes: 8 << 30, FS: "ext4", Role: "root"},
	}
	reports := []wire.Progress{
		{Seq: 1, Stage: wire.StageConfiguring, Percentage: 90},
		{Seq: 2, Stage: wire.StageConfiguring, Percentage: 100, Message: "seed written", Partitions: parts},
		{Seq: 3, Stage: wire.StageCompleted, Percentage: 100},
	}
	for _, p := range reports {
		if _, err := e.store.ReportProgress(ctx, task.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	var detail ui.TaskDetail
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail); code != 200 {
		t.Fatalf("get: %d", code)
	}
	if detail.Partitions == nil || detail.Partitions.Attempt != 1 || len(detail.Partitions.Partitions) != 3 {
		t.Fatalf("partitions %+v", detail.Partitions)
	}
	for i, p := range detail.Partitions.Partitions {
		if p != parts[i] {
			t.Errorf("partition %d: %+v, want %+v", i+1, p, parts[i])
		}
	}
	if detail.Progress == nil || detail.Progress.Stage != wire.StageCompleted || len(detail.Progress.Partitions) != 0 {
		t.Errorf("progress %+v", detail.Progress)
	}

	// A table an agent could not have read is refused, naming the problem.
	bad := []struct {
		parts []wire.Partition
		want  string
	}{
		{make([]wire.Partition, 129), "at most 128"},
		{[]wire.Partition{{Number: 0}}, "partition number 0"},
		{[]wire.Partition{{Number: 1, Name: strings.Repeat("x", 200)}}, "name"},
		{[]wire.Partition{{Number: 1, SizeBytes: -1}}, "negative"},
	}
	for i, b := range bad {
		_, err := e.store.ReportProgress(ctx, task.ID, wire.Progress{Seq: int64(10 + i), Stage: wire.StageCompleted, Percentage: 100, Partitions: b.parts})
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("bad table %d: err %v, want %q", i, err, b.want)
		}
	}
}

// POST /api/v1/tasks takes a static address; a bad one is a 400 that
// names the field.
func TestCreateTaskWithStaticNetwork(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	var task store.Task
	body := `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5e","os_type":"ubuntu","os_version":"22.04",` +
		`"network":{"address":"10.0.0.5/24","gateway":"10.0.0.1","dns":["10.0.0.53"]}}`
	if code := e.do(t, "POST", "/api/v1/tasks", body, &task); code != 201 {
		t.Fatalf("create: %d", code)
	}
	n := task.Spec.Network
	if n == nil || n.Address != "10.0.0.5/24" || n.Gateway != "10.0.0.1" || len(n.DNS) != 1 || n.MAC != "00:1a:2b:3c:4d:5e" {
		t.Fatalf("network %+v", n)
	}
	var detail ui.TaskDetail
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail); code != 200 || detail.Spec.Network == nil || detail.Spec.Network.MAC != "00:1a:2b:3c:4d:5e" {
		t.Fatalf("get: %d %+v", code, detail.Spec.Network)
	}
	for _, tc := range []struct{ network, want string }{
		{`{"address":"10.0.0.5"}`, "network.address"},
		{`{"address":"10.0.0.5/24","gateway":"192.168.1.1"}`, "network.gateway"},
		{`{"address":"10.0.0.5/24","dns":["x"]}`, "network.dns"},
	} {
		var apiErr wire.Error
		body := `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5f","os_type":"debian","os_version":"12","network":` + tc.network + `}`
		if code := e.do(t, "POST", "/api/v1/tasks", body, &apiErr); code != 400 || !strings.Contains(apiErr.Error, tc.want) {
			t.Errorf("network %s: %d %q, want 400 naming %s", tc.network, code, apiErr.Error, tc.want)
		}
	}
}
