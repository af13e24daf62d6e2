package store

import (
	"fmt"
	"testing"
	"unsafe"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The index keeps one copy of the values its tasks share (region, OS,
// status, reason, progress stage and message, hardware model and vendor)
// and reads every field as stored.
func TestIndexInternsSharedValues(t *testing.T) {
	t.Parallel()
	tasks := map[string]*indexed{}
	for i := range 2 {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012x", i)
		p := "/tasks/" + id + "/"
		for _, kv := range [][2]string{
			{p + "spec", fmt.Sprintf(`{"region_id":"dc1","target_mac":"02:00:00:00:00:%02x","os_type":"ubuntu","os_version":"22.04","created_at":"2026-12-02T10:00:00Z"}`, i)},
			{p + "status", `{"s":"completed","r":"installation completed","u":1764669600000,"a":1}`},
			{p + "progress", `{"q":9,"s":"done","p":100,"m":"installation completed","u":1764669600000}`},
			{p + "hardware", fmt.Sprintf(`{"cpu":{"model":"AMD EPYC 7443P","cores":24},"dmi":{"vendor":"Dell Inc.","product":"PowerEdge R6515","serial":"S%d"},"boot_mode":"uefi","kernel":"6.8.0","hostname":"h%d"}`, i, i)},
		} {
			applyKV(tasks, &mvccpb.KeyValue{Key: []byte(kv[0]), Value: []byte(kv[1]), ModRevision: 5}, false, true)
		}
	}
	a, b := tasks["00000000-0000-4000-8000-000000000000"].t, tasks["00000000-0000-4000-8000-000000000001"].t
	same := func(what, x, y string) {
		t.Helper()
		if x != y {
			t.Fatalf("%s: %q and %q", what, x, y)
		}
		if unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s %q: two copies", what, x)
		}
	}
	same("region", a.Spec.RegionID, b.Spec.RegionID)
	same("os", a.Spec.OSType, b.Spec.OSType)
	same("os version", a.Spec.OSVersion, b.Spec.OSVersion)
	same("status", string(a.Status.Status), string(b.Status.Status))
	same("reason", a.Status.Reason, b.Status.Reason)
	same("stage", a.Progress.Stage, b.Progress.Stage)
	same("message", a.Progress.Message, b.Progress.Message)
	same("cpu", a.Hardware.CPU.Model, b.Hardware.CPU.Model)
	same("dmi vendor", a.Hardware.DMI.Vendor, b.Hardware.DMI.Vendor)
	same("boot mode", a.Hardware.BootMode, b.Hardware.BootMode)
	if a.Hardware.DMI.Serial != "S0" || b.Hardware.Hostname != "h1" || a.Spec.TargetMAC != "02:00:00:00:00:00" || a.Progress.TaskID != a.ID ||
		a.Progress.Percentage != 100 || a.Status.Attempt != 1 || a.Hardware.CPU.Cores != 24 {
		t.Fatalf("fields read back wrong: %+v %+v %+v", a, *a.Progress, *a.Hardware)
	}
	if unsafe.StringData(a.Progress.TaskID) != unsafe.StringData(a.ID) {
		t.Error("the progress holds a second copy of the task's ID")
	}
}
