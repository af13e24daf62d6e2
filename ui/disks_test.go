package ui_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

func fourDisks(t testing.TB) wire.Hardware {
	t.Helper()
	d, err := hw.Disks(filepath.Join("..", "testdata", "agent", "disks4"))
	if err != nil || len(d) != 4 {
		t.Fatalf("disks4 fixture: %v", err)
	}
	return wire.Hardware{BootMode: "uefi", Disks: d}
}

// root_device_hints on POST /api/v1/tasks; target_disk on GET before
// approval; approve with {"disk": ...} overrides it, a disk that is not
// exactly one reported disk is 400 and approves nothing.
func TestRootDeviceHintsAndApproveDisk(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	ctx := context.Background()
	// A 300 GB image straight into the catalog (the API would read the
	// whole source): the disk choice needs only its size.
	if err := e.store.PutImage(ctx, store.Image{OSType: "ubuntu", OSVersion: "22.04", Source: "/srv/ubuntu.img", Format: "raw",
		SHA256: strings.Repeat("ab", 32), Size: 300000000000, FileSize: 300000000000}); err != nil {
		t.Fatalf("add image: %v", err)
	}
	var apiErr wire.Error
	for body, field := range map[string]string{
		`"root_device_hints":{"min_size_bytes":2000,"max_size_bytes":1000}`: "root_device_hints.min_size_bytes",
		`"root_device_hints":{"name":"disk/by-id/x"}`:                       "root_device_hints.name",
		`"root_device_hints":{"size":100}`:                                  "unknown field",
		`"root_device_hints":{"rotational":"yes"}`:                          "rotational",
	} {
		b := `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:60","os_type":"ubuntu","os_version":"22.04",` + body + `}`
		if code := e.do(t, "POST", "/api/v1/tasks", b, &apiErr); code != 400 || !strings.Contains(apiErr.Error, field) {
			t.Errorf("create with %s: %d %q, want 400 naming %s", body, code, apiErr.Error, field)
		}
	}

	var task store.Task
	if code := e.do(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:61","os_type":"ubuntu","os_version":"22.04","root_device_hints":{"model":"SAMSUNG MZQLB480HAJQ-00007","rotational":false}}`, &task); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if h := task.Spec.RootDeviceHints; h == nil || h.Model != "SAMSUNG MZQLB480HAJQ-00007" || h.Rotational == nil || *h.Rotational {
		t.Fatalf("hints not kept: %+v", h)
	}
	if _, err := e.store.ClaimTask(ctx, task.ID, store.NewSecret()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SetHardware(ctx, task.ID, fourDisks(t)); err != nil {
		t.Fatal(err)
	}
	var detail ui.TaskDetail
	e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail)
	td := detail.TargetDisk
	if detail.Status.Status != wire.StatusPendingApproval || td == nil || td.Name != "nvme0n1" || td.Serial != "S4EMNX0R123456" ||
		td.WWN != "eui.0025388b91c0ffee" || td.ByPath != "pci-0000:3b:00.0-nvme-1" || td.SizeBytes != 937703088*512 ||
		td.Description != "/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456, wwn eui.0025388b91c0ffee" {
		t.Fatalf("GET before approval: %s, target %+v", detail.Status.Status, td)
	}
	var list ui.TaskList
	if e.do(t, "GET", "/api/v1/tasks?status=pending_approval", "", &list); list.Count != 1 || list.Tasks[0].TargetDisk == nil || list.Tasks[0].TargetDisk.Name != "nvme0n1" {
		t.Fatalf("list: %+v", list)
	}

	for body, msg := range map[string]string{
		`{"disk":"sdz"}`:   "no disk matches",
		`{"disk":"sda"}`:   "smaller than", // 240 GB < the 300 GB image
		`{"disk":"ATA"}`:   "no disk matches",
		`{"disk":1}`:       "invalid JSON",
		`{"disks":"sdb"}`:  "unknown field",
		`{"disk":"sdb"}{}`: "unexpected data",
	} {
		if code := e.do(t, "PUT", "/api/v1/tasks/"+task.ID+"/approve", body, &apiErr); code != 400 || !strings.Contains(apiErr.Error, msg) {
			t.Errorf("approve %s: %d %q, want 400 mentioning %q", body, code, apiErr.Error, msg)
		}
	}
	if e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail); detail.Status.Status != wire.StatusPendingApproval || detail.TargetDisk.Name != "nvme0n1" {
		t.Fatalf("a refused approval changed the task: %s %+v", detail.Status.Status, detail.TargetDisk)
	}
	if code := e.do(t, "PUT", "/api/v1/tasks/"+task.ID+"/approve", `{"disk":"/dev/sdb"}`, &task); code != 200 || task.Status.Status != wire.StatusApproved ||
		task.TargetDisk == nil || task.TargetDisk.Name != "sdb" || task.TargetDisk.ChosenBy != store.ChosenByOperator {
		t.Fatalf("approve sdb: %d %s %+v", code, task.Status.Status, task.TargetDisk)
	}
	e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail)
	found := false
	for _, ev := range detail.Events {
		found = found || ev.Kind == "disk" && strings.Contains(ev.Message, "operator") && strings.Contains(ev.Message, "/dev/sdb, 4.0 TB")
	}
	if detail.TargetDisk.Name != "sdb" || !found {
		t.Fatalf("after approval: %+v, events %+v", detail.TargetDisk, detail.Events)
	}

	// A task whose hints match nothing fails at once, with the disks.
	if code := e.do(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:62","os_type":"ubuntu","os_version":"22.04","root_device_hints":{"serial":"NOPE"}}`, &task); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if _, err := e.store.ClaimTask(ctx, task.ID, store.NewSecret()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SetHardware(ctx, task.ID, fourDisks(t)); err != nil {
		t.Fatal(err)
	}
	detail = ui.TaskDetail{}
	e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail)
	if detail.Status.Status != wire.StatusFailed || !strings.Contains(detail.Status.Reason, "/dev/sdb, 4.0 TB, ST4000NM0035-1V4, serial ZC1A2B3C") || detail.TargetDisk != nil {
		t.Fatalf("no match: %s %q %+v", detail.Status.Status, detail.Status.Reason, detail.TargetDisk)
	}
}

// The /ws hub: the chosen disk arrives as a target_disk message, its
// removal (retry) as one with target_disk null, and a snapshot carries it.
func TestHubTargetDiskMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	h := startHub(t, st, ui.HubConfig{})
	sub, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unsubscribe(sub)
	type diskMsg struct {
		Type       string            `json:"type"`
		TaskID     string            `json:"task_id"`
		TargetDisk *store.TargetDisk `json:"target_disk"`
	}
	nextDisk := func(id string) diskMsg {
		t.Helper()
		for range 100 {
			select {
			case b := <-sub.C:
				var m diskMsg
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatal(err)
				}
				if m.Type == ui.MsgTargetDisk && m.TaskID == id {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no target_disk message")
			}
		}
		t.Fatal("no target_disk message")
		return diskMsg{}
	}
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:0d:02", OSType: "ubuntu", OSVersion: "22.04",
		RootDeviceHints: &wire.RootDeviceHints{WWN: "naa.5000c500a1b2c3d4"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimTask(ctx, task.ID, "tok"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetHardware(ctx, task.ID, fourDisks(t)); err != nil {
		t.Fatal(err)
	}
	if m := nextDisk(task.ID); m.TargetDisk == nil || m.TargetDisk.Name != "sdb" || m.TargetDisk.ChosenBy != store.ChosenByHints {
		t.Fatalf("target_disk message: %+v", m.TargetDisk)
	}
	sub2, err := h.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var snap struct{ Tasks []store.Task }
	if err := json.Unmarshal(<-sub2.C, &snap); err != nil || len(snap.Tasks) != 1 || snap.Tasks[0].TargetDisk == nil || snap.Tasks[0].TargetDisk.Name != "sdb" {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	h.Unsubscribe(sub2)
	if _, err := st.Transition(ctx, task.ID, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Transition(ctx, task.ID, wire.StatusPending, "retry"); err != nil {
		t.Fatal(err)
	}
	if m := nextDisk(task.ID); m.TargetDisk != nil {
		t.Fatalf("after retry: %+v, want target_disk null", m.TargetDisk)
	}
}
