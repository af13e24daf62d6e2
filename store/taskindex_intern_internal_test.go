package store

import (
	"fmt"
	"testing"
	"unsafe"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The task index keeps one copy of a value many tasks repeat (region, OS,
// status, stage, disk and machine models), decodes every value as before,
// and a progress record's task ID is the entry's own string, not a piece
// of the key it came in.
func TestIndexInternsRepeatedValues(t *testing.T) {
	tasks := map[string]*indexed{}
	in := newInterner()
	put := func(key, val string) {
		applyKV(tasks, in, &mvccpb.KeyValue{Key: []byte(key), Value: []byte(val), ModRevision: 7}, false)
	}
	ids := []string{"0e0e0e0e-0000-4000-8000-000000000001", "0e0e0e0e-0000-4000-8000-000000000002"}
	for i, id := range ids {
		put(specKey(id), fmt.Sprintf(`{"region_id":"dc1","target_mac":"52:54:00:00:00:0%d","os_type":"ubuntu","os_version":"24.04","hostname":"node-%d","created_at":"2026-12-02T02:31:48Z"}`, i, i))
		put(statusKey(id), `{"s":"completed","r":"install completed","u":1796179544240,"a":1}`)
		put(progressKey(id), `{"q":5,"s":"completed","p":100,"m":"bench completed","a":1,"r":1,"u":1796179544240}`)
		put(targetDiskKey(id), fmt.Sprintf(`{"name":"nvme0n1","size_bytes":3840755982336,"model":"SAMSUNG MZQL23T8HCLS-00A07","serial":"S64HNE0R5254%d","chosen_by":"default"}`, i))
		put(hardwareKey(id), fmt.Sprintf(`{"cpu":{"model":"Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz","sockets":2},"dmi":{"vendor":"Dell Inc.","product":"PowerEdge R650","serial":"SN%d"},"boot_mode":"uefi","hostname":"node-%d","kernel":"6.8.0"}`, i, i))
	}
	a, b := &tasks[ids[0]].t, &tasks[ids[1]].t
	if tasks[ids[0]].has != 3 || tasks[ids[1]].has != 3 {
		t.Fatalf("entries not whole: %d %d", tasks[ids[0]].has, tasks[ids[1]].has)
	}
	same := func(what, x, y string) {
		t.Helper()
		if x != y || unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s: %q and %q are two copies, want one", what, x, y)
		}
	}
	same("region", a.Spec.RegionID, b.Spec.RegionID)
	same("os", a.Spec.OSType, b.Spec.OSType)
	same("status", string(a.Status.Status), string(b.Status.Status))
	same("reason", a.Status.Reason, b.Status.Reason)
	same("stage", a.Progress.Stage, b.Progress.Stage)
	same("stage and status", a.Progress.Stage, string(b.Status.Status))
	same("message", a.Progress.Message, b.Progress.Message)
	same("disk model", a.TargetDisk.Model, b.TargetDisk.Model)
	same("chosen by", a.TargetDisk.ChosenBy, b.TargetDisk.ChosenBy)
	same("cpu", a.Hardware.CPU.Model, b.Hardware.CPU.Model)
	same("vendor", a.Hardware.DMI.Vendor, b.Hardware.DMI.Vendor)
	same("kernel", a.Hardware.Kernel, b.Hardware.Kernel)
	same("task id", a.Progress.TaskID, a.ID)
	if a.Spec.TargetMAC == b.Spec.TargetMAC || a.TargetDisk.Serial == b.TargetDisk.Serial || a.Hardware.DMI.Serial == b.Hardware.DMI.Serial {
		t.Errorf("per-machine values mixed up: %+v %+v", a, b)
	}
	if a.Progress.Percentage != 100 || a.Status.Attempt != 1 || a.TargetDisk.SizeBytes != 3840755982336 || a.Revision != 7 || a.Hardware.CPU.Sockets != 2 {
		t.Errorf("values not decoded as before: %+v", a)
	}

	// Bounded: past maxInterned values a value is kept as decoded.
	for i := len(in.m); i < maxInterned+10; i++ {
		in.str(fmt.Sprint("message ", i))
	}
	if len(in.m) != maxInterned {
		t.Errorf("%d values interned, want at most %d", len(in.m), maxInterned)
	}
	if s := in.str("dc1"); unsafe.StringData(s) != unsafe.StringData(a.Spec.RegionID) {
		t.Error("a value interned before the bound is no longer shared")
	}
}
