package agentapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/runner"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// The agent's own flow against a region on a real store, on the four-disk
// fixture (nvme0n1 480 GB SAMSUNG, sda 240 GB SATA SSD, sdb 4 TB HDD, sdc
// USB stick), each disk a file in the agent's DevDir: the server chooses
// the disk from the task's hints before approval, the operator may name
// another, the agent writes exactly that one; no match and several matches
// fail the task before anything is written.
func TestAgentWritesTheDiskChosenBeforeApproval(t *testing.T) { // not parallel: see TestEachFormatWrittenByTheAgent
	st := newStore(t)
	ctx := context.Background()
	img, _ := osImage(t) // a GPT disk with an ext4 root: the agent writes its seed into it
	addImage(t, st, "ubuntu", "22.04", img)
	r := newRegion(t, st, "dc1", nil)
	r.start(t)
	disks, err := hw.Disks(filepath.Join("..", "testdata", "agent", "disks4"))
	if err != nil || len(disks) != 4 {
		t.Fatalf("disks4 fixture: %v", err)
	}
	yes := true
	tests := []struct {
		name     string
		hints    *wire.RootDeviceHints
		chosen   string // target_disk before approval
		override string // disk named at approval
		written  string
		failWith []string
	}{
		{name: "default: smallest fixed disk", chosen: "sda", written: "sda"},
		{name: "by serial", hints: &wire.RootDeviceHints{Serial: "S4EMNX0R123456"}, chosen: "nvme0n1", written: "nvme0n1"},
		{name: "by wwn", hints: &wire.RootDeviceHints{WWN: "naa.55cd2e415a1b2c3d"}, chosen: "sda", written: "sda"},
		{name: "rotational", hints: &wire.RootDeviceHints{Rotational: &yes}, chosen: "sdb", written: "sdb"},
		{name: "by path", hints: &wire.RootDeviceHints{ByPath: "pci-0000:3b:00.0-nvme-1"}, chosen: "nvme0n1", written: "nvme0n1"},
		{name: "operator overrides at approval", hints: &wire.RootDeviceHints{Name: "nvme0n1"}, chosen: "nvme0n1", override: "ZC1A2B3C", written: "sdb"},
		{name: "no match", hints: &wire.RootDeviceHints{Model: "NO SUCH MODEL"},
			failWith: []string{"no disk matches", "model=NO SUCH MODEL", "/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456", "/dev/sdc"}},
		{name: "ambiguous", hints: &wire.RootDeviceHints{MinSizeBytes: 200e9, MaxSizeBytes: 500e9},
			failWith: []string{"several disks match", "/dev/nvme0n1", "/dev/sda"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: nextMAC(), OSType: "ubuntu", OSVersion: "22.04", RootDeviceHints: tt.hints})
			if err != nil {
				t.Fatal(err)
			}
			waitStatus(t, st, task.ID, wire.StatusReady)
			_, script := getText(t, r.srv.URL+"/boot/"+task.Spec.TargetMAC+".ipxe")
			m := regexp.MustCompile(`lpmos_client=(\S+) lpmos_task=(\S+) lpmos_token=(\S+) `).FindStringSubmatch(script)
			if m == nil {
				t.Fatalf("no agent parameters in script:\n%s", script)
			}
			dev := t.TempDir()
			blank := make([]byte, 2*len(img))
			for _, d := range disks {
				if err := os.WriteFile(filepath.Join(dev, d.Name), nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(filepath.Join(dev, d.Name), int64(len(blank))); err != nil {
					t.Fatal(err)
				}
			}
			log := slog.New(slog.DiscardHandler)
			run := &runner.Runner{
				API:          client.New(client.Options{BaseURL: m[1], Logger: log}),
				BootToken:    m[3],
				Log:          log,
				Hardware:     func() (wire.Hardware, error) { return wire.Hardware{BootMode: "uefi", Disks: disks}, nil },
				MAC:          task.Spec.TargetMAC,
				TaskID:       m[2],
				AutoDisk:     true,
				DevDir:       dev,
				ApprovalWait: 5 * time.Second,
				Install:      install.Options{ProgressInterval: time.Millisecond},
			}
			done := make(chan error, 1)
			go func() { done <- run.Run(ctx) }()
			wait := func() error {
				select {
				case err := <-done:
					return err
				case <-time.After(30 * time.Second):
					t.Fatal("agent did not finish")
				}
				return nil
			}

			if tt.failWith != nil {
				err := wait()
				var stop *runner.StopError
				if !errors.As(err, &stop) || stop.Status != wire.StatusFailed {
					t.Fatalf("agent: %v, want it stopped by the failed task", err)
				}
				final := waitStatus(t, st, task.ID, wire.StatusFailed)
				for _, s := range tt.failWith {
					if !strings.Contains(final.Status.Reason, s) || !strings.Contains(err.Error(), s) {
						t.Errorf("reason %q / agent error %q\ndo not mention %q", final.Status.Reason, err, s)
					}
				}
				if final.TargetDisk != nil || final.Progress != nil {
					t.Errorf("failed task has target %+v, progress %+v", final.TargetDisk, final.Progress)
				}
			} else {
				waiting := waitStatus(t, st, task.ID, wire.StatusPendingApproval)
				if waiting.TargetDisk == nil || waiting.TargetDisk.Name != tt.chosen {
					t.Fatalf("target before approval: %+v, want %s", waiting.TargetDisk, tt.chosen)
				}
				if _, err := st.Approve(ctx, task.ID, tt.override); err != nil {
					t.Fatal(err)
				}
				if err := wait(); err != nil {
					t.Fatalf("agent: %v", err)
				}
				final := waitStatus(t, st, task.ID, wire.StatusCompleted)
				if final.TargetDisk == nil || final.TargetDisk.Name != tt.written {
					t.Errorf("target after approval: %+v, want %s", final.TargetDisk, tt.written)
				}
			}
			for _, d := range disks {
				b, err := os.ReadFile(filepath.Join(dev, d.Name))
				if err != nil {
					t.Fatal(err)
				}
				// The image's MBR and GPT partition array (the headers and
				// the root file system change on install: backup GPT moved,
				// NoCloud seed written).
				has := bytes.Equal(b[:446], img[:446]) && bytes.Equal(b[1024:17408], img[1024:17408])
				if has != (d.Name == tt.written) {
					t.Errorf("%s holds the image: %v; want only %q written", d.Name, has, tt.written)
				}
				if !has && !bytes.Equal(b, blank) {
					t.Errorf("%s was touched", d.Name)
				}
			}
		})
	}
}
