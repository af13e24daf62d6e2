package ui

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// A task loaded from the store's index shares the index's hardware,
// progress and target disk (no copy per task), and its /ws summary is the
// same compact form as that of a task whose parts the hub compacted as
// they arrived: no task ID or MAC echoed in the progress, no partitions,
// the disk's name, size, description and chooser only.
func TestIndexedTaskSharesAndSendsCompact(t *testing.T) {
	idx := store.Task{
		ID:       "0e0e0e0e-0000-4000-8000-000000000001",
		Spec:     store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:00:01", OSType: "ubuntu", OSVersion: "24.04", UserData: "#cloud-config", CreatedAt: time.Unix(1700000000, 0).UTC()},
		Status:   store.StatusRecord{Status: wire.StatusCompleted, Attempt: 1},
		Hardware: &wire.Hardware{Hostname: "node-1", DMI: wire.DMI{Vendor: "Dell Inc.", Product: "R650", Serial: "SN1"}},
		Progress: &wire.Progress{TaskID: "0e0e0e0e-0000-4000-8000-000000000001", MACAddress: "52:54:00:00:00:01", Seq: 9, Stage: wire.StageCompleted, Percentage: 100,
			Partitions: []wire.Partition{{Name: "nvme0n1p1"}}},
		TargetDisk: &store.TargetDisk{Disk: wire.Disk{Name: "nvme0n1", SizeBytes: 3840755982336, Model: "SAMSUNG", Serial: "S64"}, ChosenBy: store.ChosenByDefault, Description: "/dev/nvme0n1, 3.8 TB"},
		Revision:   42,
	}
	hub := indexedTask(idx)
	if hub.Hardware != idx.Hardware || hub.Progress != idx.Progress || hub.TargetDisk != idx.TargetDisk {
		t.Error("the hub copied the index's hardware, progress or target disk instead of sharing them")
	}
	if hub.Spec.UserData != "" {
		t.Error("the hub keeps the spec's user data")
	}
	got, err := json.Marshal(summaryOf(&hub))
	if err != nil {
		t.Fatal(err)
	}
	own := compactTask(idx) // as the hub compacts parts arriving on its watch
	want, err := json.Marshal(summaryOf(&own))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("summary of an indexed task\n %s\nwant (the hub's own compact form)\n %s", got, want)
	}
	var sum TaskSummary
	if err := json.Unmarshal(got, &sum); err != nil {
		t.Fatal(err)
	}
	if p := sum.Progress; p == nil || p.TaskID != "" || p.MACAddress != "" || p.Partitions != nil || p.Percentage != 100 {
		t.Errorf("progress sent as %+v", p)
	}
	if d := sum.TargetDisk; d == nil || d.Serial != "" || d.Model != "" || d.Name != "nvme0n1" || d.Description == "" {
		t.Errorf("target disk sent as %+v", d)
	}
	if strings.Contains(string(got), "cloud-config") {
		t.Errorf("summary carries the user data: %s", got)
	}
	if idx.Progress.TaskID == "" || len(idx.Progress.Partitions) != 1 || idx.TargetDisk.Serial != "S64" {
		t.Error("sending a summary changed the index's values")
	}
}
