package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// fourDisks is the hardware of the disks4 fixture: nvme0n1 480 GB SAMSUNG,
// sda 240 GB SATA SSD, sdb 4 TB HDD, sdc USB stick.
func fourDisks(t *testing.T) wire.Hardware {
	t.Helper()
	d, err := hw.Disks(filepath.Join("..", "testdata", "agent", "disks4"))
	if err != nil || len(d) != 4 {
		t.Fatalf("disks4 fixture: %v", err)
	}
	return wire.Hardware{BootMode: "uefi", Disks: d}
}

func readyTask(t *testing.T, s *store.Store, mac, version string, hints *wire.RootDeviceHints) store.Task {
	t.Helper()
	ctx := context.Background()
	sp := spec(mac)
	sp.OSVersion = version
	sp.RootDeviceHints = hints
	task, err := s.CreateTask(ctx, sp)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if task, err = s.Transition(ctx, task.ID, wire.StatusReady, "test"); err != nil {
		t.Fatal(err)
	}
	return task
}

func putImage(t *testing.T, s *store.Store, version string, size int64) {
	t.Helper()
	err := s.PutImage(context.Background(), store.Image{OSType: "ubuntu", OSVersion: version, Source: "/nonexistent.img",
		Format: "raw", SHA256: strings.Repeat("ab", 32), Size: size, FileSize: size})
	if err != nil {
		t.Fatal(err)
	}
}

func TestHardwareChoosesTheDisk(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	hwr := fourDisks(t)
	yes := true
	tests := []struct {
		name      string
		hints     *wire.RootDeviceHints
		imageSize int64 // 0: no image in the catalog
		want      string
		wantBy    string
		failWith  []string // the task fails at once, the reason holds these
	}{
		{name: "no hints, no image: smallest fixed disk", want: "sda", wantBy: store.ChosenByDefault},
		{name: "no hints, 300 GB image", imageSize: 300e9, want: "nvme0n1", wantBy: store.ChosenByDefault},
		{name: "name", hints: &wire.RootDeviceHints{Name: "/dev/nvme0n1"}, want: "nvme0n1", wantBy: store.ChosenByHints},
		{name: "serial", hints: &wire.RootDeviceHints{Serial: "PHYF912345AB240AGN"}, want: "sda", wantBy: store.ChosenByHints},
		{name: "wwn", hints: &wire.RootDeviceHints{WWN: "0x5000c500a1b2c3d4"}, want: "sdb", wantBy: store.ChosenByHints},
		{name: "rotational", hints: &wire.RootDeviceHints{Rotational: &yes}, want: "sdb", wantBy: store.ChosenByHints},
		{name: "model and size", hints: &wire.RootDeviceHints{Model: "samsung mzqlb480hajq-00007", MinSizeBytes: 400e9}, want: "nvme0n1", wantBy: store.ChosenByHints},
		{name: "no match", hints: &wire.RootDeviceHints{Serial: "NOSUCHSERIAL"},
			failWith: []string{"no disk matches", "serial=NOSUCHSERIAL", "/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456", "/dev/sda, 240 GB", "/dev/sdb, 4.0 TB", "/dev/sdc"}},
		{name: "removable only", hints: &wire.RootDeviceHints{Name: "sdc"}, failWith: []string{"no disk matches", "removable"}},
		{name: "ambiguous", hints: &wire.RootDeviceHints{Vendor: "ATA"}, failWith: []string{"several disks match", "/dev/sda", "/dev/sdb"}},
		{name: "image larger than the match", hints: &wire.RootDeviceHints{Name: "sda"}, imageSize: 300e9, failWith: []string{"too small", "/dev/sda, 240 GB"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version := "none"
			if tt.imageSize > 0 {
				version = "sized-" + macN(i)[15:]
				putImage(t, s, version, tt.imageSize)
			}
			task := readyTask(t, s, macN(i), version, tt.hints)
			got, err := s.SetHardware(ctx, task.ID, hwr)
			if err != nil {
				t.Fatalf("SetHardware: %v", err)
			}
			stored, err := s.GetTask(ctx, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Hardware == nil || len(stored.Hardware.Disks) != 4 {
				t.Errorf("hardware not kept: %+v", stored.Hardware)
			}
			if tt.failWith != nil {
				if got.Status.Status != wire.StatusFailed || stored.Status.Status != wire.StatusFailed || stored.TargetDisk != nil {
					t.Fatalf("status %s (stored %s), target %+v; want failed without a target", got.Status.Status, stored.Status.Status, stored.TargetDisk)
				}
				for _, s := range tt.failWith {
					if !strings.Contains(stored.Status.Reason, s) {
						t.Errorf("reason %q\ndoes not mention %q", stored.Status.Reason, s)
					}
				}
				// Nothing to approve: the agent never gets an install.
				if _, err := s.Approve(ctx, task.ID, ""); !errors.Is(err, store.ErrConflict) {
					t.Errorf("approve a failed task: %v", err)
				}
				return
			}
			if got.Status.Status != wire.StatusPendingApproval || got.TargetDisk == nil || got.TargetDisk.Name != tt.want {
				t.Fatalf("SetHardware: %s, target %+v; want pending_approval on %s", got.Status.Status, got.TargetDisk, tt.want)
			}
			td := stored.TargetDisk
			if td == nil || td.Name != tt.want || td.ChosenBy != tt.wantBy || !strings.HasPrefix(td.Description, "/dev/"+tt.want+", ") {
				t.Fatalf("stored target %+v, want %s chosen by %s", td, tt.want, tt.wantBy)
			}
			events, _ := s.Events(ctx, task.ID)
			found := false
			for _, ev := range events {
				found = found || ev.Kind == "disk" && strings.Contains(ev.Message, td.Description)
			}
			if !found {
				t.Errorf("no disk event in %+v", events)
			}
		})
	}
}

func macN(i int) string {
	return "02:00:00:00:0d:" + string("0123456789abcdef"[i/16]) + string("0123456789abcdef"[i%16])
}

// A machine that reboots while waiting for approval reports again: the
// choice follows the disks; hints that stop matching fail the task.
func TestHardwareReReportedBeforeApproval(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	hwr := fourDisks(t)
	task := readyTask(t, s, "02:00:00:00:0e:01", "22.04", &wire.RootDeviceHints{Serial: "ZC1A2B3C"})
	if got, err := s.SetHardware(ctx, task.ID, hwr); err != nil || got.TargetDisk == nil || got.TargetDisk.Name != "sdb" {
		t.Fatalf("first report: %+v, %v", got.TargetDisk, err)
	}
	// After the reboot the HDD came up as sda and the SSD as sdb.
	swapped := fourDisks(t)
	swapped.Disks[1].Name, swapped.Disks[2].Name = "sdb", "sda"
	if got, err := s.SetHardware(ctx, task.ID, swapped); err != nil || got.TargetDisk == nil || got.TargetDisk.Name != "sda" || got.Status.Status != wire.StatusPendingApproval {
		t.Fatalf("re-report: %+v, %v", got, err)
	}
	if got, _ := s.GetTask(ctx, task.ID); got.TargetDisk == nil || got.TargetDisk.Serial != "ZC1A2B3C" || got.TargetDisk.Name != "sda" {
		t.Fatalf("stored target after re-report: %+v", got.TargetDisk)
	}
	// The HDD is gone: no disk matches any more.
	gone := fourDisks(t)
	gone.Disks = append(gone.Disks[:2], gone.Disks[3])
	got, err := s.SetHardware(ctx, task.ID, gone)
	if err != nil || got.Status.Status != wire.StatusFailed || !strings.Contains(got.Status.Reason, "serial=ZC1A2B3C") {
		t.Fatalf("re-report without the disk: %s %q, %v", got.Status.Status, got.Status.Reason, err)
	}
}

func TestApproveNamesTheDisk(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	putImage(t, s, "22.04", 300e9)
	hwr := fourDisks(t)
	newTask := func(mac string) string {
		task := readyTask(t, s, mac, "22.04", nil)
		got, err := s.SetHardware(ctx, task.ID, hwr)
		if err != nil || got.TargetDisk == nil || got.TargetDisk.Name != "nvme0n1" {
			t.Fatalf("SetHardware: %+v, %v", got.TargetDisk, err)
		}
		return task.ID
	}
	id := newTask("02:00:00:00:0f:01")
	for _, bad := range []struct{ disk, msg string }{
		{"sdz", "no disk matches"},
		{"sda", "smaller than the ubuntu 22.04 image"}, // 240 GB < 300 GB
		{"ATA", "no disk matches"},
	} {
		_, err := s.Approve(ctx, id, bad.disk)
		if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("Approve(%q) = %v, want ErrInvalid mentioning %q", bad.disk, err, bad.msg)
		}
	}
	if got, _ := s.GetTask(ctx, id); got.Status.Status != wire.StatusPendingApproval || got.TargetDisk.Name != "nvme0n1" {
		t.Fatalf("a refused approval changed the task: %s on %s", got.Status.Status, got.TargetDisk.Name)
	}
	// Override by wwn: the HDD.
	got, err := s.Approve(ctx, id, "naa.5000c500a1b2c3d4")
	if err != nil || got.Status.Status != wire.StatusApproved || got.TargetDisk.Name != "sdb" || got.TargetDisk.ChosenBy != store.ChosenByOperator {
		t.Fatalf("override: %+v, %v", got.TargetDisk, err)
	}
	if stored, _ := s.GetTask(ctx, id); stored.TargetDisk == nil || stored.TargetDisk.Name != "sdb" {
		t.Fatalf("stored after override: %+v", stored.TargetDisk)
	}
	// Confirming the server's choice keeps who chose it.
	id2 := newTask("02:00:00:00:0f:02")
	if got, err := s.Approve(ctx, id2, "/dev/nvme0n1"); err != nil || got.TargetDisk.ChosenBy != store.ChosenByDefault {
		t.Fatalf("confirm: %+v, %v", got.TargetDisk, err)
	}
	// A retry forgets the disk with the hardware.
	if _, err := s.Transition(ctx, id2, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, id2, wire.StatusPending, "retry"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetTask(ctx, id2); got.TargetDisk != nil || got.Hardware != nil {
		t.Errorf("after retry: target %+v", got.TargetDisk)
	}
}

func TestRootDeviceHintsValidation(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	for _, tc := range []struct {
		hints wire.RootDeviceHints
		field string
	}{
		{wire.RootDeviceHints{MinSizeBytes: 2e12, MaxSizeBytes: 1e12}, "root_device_hints.min_size_bytes"},
		{wire.RootDeviceHints{Name: "disk/by-id/foo"}, "root_device_hints.name"},
		{wire.RootDeviceHints{Serial: "a\x00b"}, "root_device_hints.serial"},
	} {
		sp := spec("02:00:00:00:10:01")
		sp.RootDeviceHints = &tc.hints
		if _, err := s.CreateTask(ctx, sp); !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("hints %+v: %v, want ErrInvalid naming %s", tc.hints, err, tc.field)
		}
	}
	// Empty hints are no hints.
	sp := spec("02:00:00:00:10:02")
	sp.RootDeviceHints = &wire.RootDeviceHints{}
	task, err := s.CreateTask(ctx, sp)
	if err != nil || task.Spec.RootDeviceHints != nil {
		t.Fatalf("empty hints: %+v, %v", task.Spec.RootDeviceHints, err)
	}
}
