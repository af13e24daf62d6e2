package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/testenv"
)

// tESP makes a FAT ESP image holding files (path relative to the ESP root,
// e.g. EFI/debian/shimx64.efi) with mtools, as image builders do.
func tESP(t *testing.T, size int64, files map[string]string) []byte {
	t.Helper()
	for _, tool := range []string{"mmd", "mcopy"} {
		testenv.RequireTool(t, tool, "mtools")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "esp.img")
	if err := os.WriteFile(img, tMkfsVfat(t, size), 0o600); err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for p, content := range files {
		parts := strings.Split(p, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if made[d] {
				continue
			}
			if out, err := exec.Command("mmd", "-i", img, "::/"+d).CombinedOutput(); err != nil {
				t.Fatalf("mmd %s: %v\n%s", d, err, out)
			}
			made[d] = true
		}
		src := filepath.Join(dir, "f")
		if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mcopy", "-i", img, src, "::/"+p).CombinedOutput(); err != nil {
			t.Fatalf("mcopy %s: %v\n%s", p, err, out)
		}
	}
	return readFile(t, img)
}

// tESPRead reads a file of a FAT image with mtools (an independent
// reader); ok is false when the file is absent.
func tESPRead(t *testing.T, esp []byte, path string) (string, bool) {
	t.Helper()
	testenv.RequireTool(t, "mtype", "mtools")
	img := filepath.Join(t.TempDir(), "esp.img")
	if err := os.WriteFile(img, esp, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mtype", "-i", img, "::/"+path).Output()
	if err != nil {
		return "", false
	}
	return string(out), true
}

// mtoolsESP mounts an ESP through mtools where the kernel has no vfat
// driver (this project's CI kernel): mount copies the file system's tree
// out of the partition device into dir, unmount copies the tree back
// (new and changed files; the agent only adds) and empties dir. What is on
// the partition afterwards is what mtools wrote into the FAT, read back by
// the test with mtools too.
type mtoolsESP struct{ dev string }

func (m *mtoolsESP) run(args ...string) error {
	cmd := exec.Command("mcopy", args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mcopy %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (m *mtoolsESP) mount(dev, dir string) error {
	m.dev = dev
	return m.run("-s", "-n", "-i", dev, "::/*", dir+"/")
}

func (m *mtoolsESP) unmount(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := m.run("-s", "-o", "-i", m.dev, filepath.Join(dir, e.Name()), "::/"); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	// mtools leaves its writes in the device's page cache; a kernel
	// unmount syncs them, and so must this one before the loop device goes.
	f, err := os.OpenFile(m.dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// tESPMounter is the kernel's vfat driver where the kernel has one, else
// mtools.
func tESPMounter(t *testing.T) espMounter {
	t.Helper()
	if b, err := os.ReadFile("/proc/filesystems"); err == nil && strings.Contains(string(b), "\tvfat\n") {
		return nil
	}
	testenv.RequireTool(t, "mcopy", "mtools")
	t.Log("the kernel has no vfat driver: the ESP is read and written through mtools")
	return &mtoolsESP{}
}

// A whole install on a UEFI machine (efivarfs stood in for by a directory
// with the firmware's variables): the agent finds the ESP in the table the
// image left, the loader on it (shim before grub), installs the removable
// fallback, and registers a Boot#### for the loader right after the network
// option the machine booted from. An ESP without a loader fails the task
// with a reason naming what was looked for, wipes the disk's GPTs, and
// leaves the firmware's variables alone.
func TestInstallRegistersUEFIBootEntry(t *testing.T) {
	testenv.RequireRoot(t, "loop devices for the ESP and the root file system")
	arch := efiArch(runtime.GOARCH)
	upper := strings.ToUpper(arch)
	root := tMkfsExt4(t, 4<<20, map[string]string{"etc/os-release": "ID=debian\nVERSION_ID=12\n"})
	withShim := tESP(t, 2<<20, map[string]string{
		"EFI/debian/shim" + arch + ".efi": "SHIM", "EFI/debian/grub" + arch + ".efi": "GRUB",
		"EFI/debian/mm" + arch + ".efi": "MOKMANAGER",
	})
	noLoader := tESP(t, 2<<20, map[string]string{"EFI/debian/grub.cfg": "search --fs-uuid x\n"})

	// The machine's NVRAM: it PXE-booted from Boot0000 (BootCurrent) and
	// has a disk option from the firmware, Boot0001.
	nvram := func(t *testing.T) string {
		dir := t.TempDir()
		tVar(t, dir, "Boot0000", tNetOption(t))
		other := espPartition{Number: 1, StartLBA: 2048, Sectors: 2048, SectorSz: 512}
		tVar(t, dir, "Boot0001", encodeLoadOption("UEFI Misc Device", other, `\EFI\BOOT\BOOTX64.EFI`))
		tVar(t, dir, "BootCurrent", encodeU16s([]uint16{0}))
		tVar(t, dir, "BootOrder", encodeU16s([]uint16{1, 0}))
		return dir
	}
	install := func(t *testing.T, esp []byte, vars string) (error, []Progress, []byte, []byte) {
		image, starts := tMakeGPTDisk(t, 7,
			tPart{typ: guidESP, name: "EFI system", data: esp},
			tPart{typ: guidRootX86_64, name: "root", data: root})
		srv := newImageServer(t, gz(t, image), 0)
		disk := newDisk(t, int64(len(image))+4<<20)
		rec := &recorder{}
		spec := wire.InstallSpec{OSType: "debian", OSVersion: "12", ImageURL: srv.URL + "/img", ImageSHA256: sha(image),
			ImageSize: int64(len(image)), ImageFormat: "gzip", Hostname: "web-01"}
		o := testOptions(t, disk, rec)
		o.EFIVarsDir = vars
		o.espFS = tESPMounter(t)
		err := Install(context.Background(), spec, o)
		got := readFile(t, disk)
		return err, rec.all(), got, got[starts[0] : starts[0]+int64(len(esp))]
	}

	t.Run("shim on the ESP", func(t *testing.T) {
		vars := nvram(t)
		err, progress, disk, esp := install(t, withShim, vars)
		if err != nil {
			t.Fatalf("Install: %v", err)
		}
		last := progress[len(progress)-1]
		loader := `\EFI\debian\shim` + arch + `.efi`
		for _, want := range []string{"seed written to partition 2 (ext4)", `UEFI boot entry Boot0002 "lpmos: debian 12" -> ` + loader,
			"on partition 1", "BootOrder 0000,0002,0001", `removable fallback \EFI\BOOT\BOOT` + upper + `.EFI installed`} {
			if !strings.Contains(last.Message, want) {
				t.Errorf("final message %q\nlacks %q", last.Message, want)
			}
		}
		if got := decodeU16s(readFile(t, filepath.Join(vars, "BootOrder-"+efiGlobalGUID))[4:]); !reflect.DeepEqual(got, []uint16{0, 2, 1}) {
			t.Errorf("BootOrder %04X, want network boot first, the new entry next: 0000,0002,0001", got)
		}
		// The entry points at partition 1 of this disk (its unique GUID
		// from the table the image left) and at the shim.
		esp1 := espPartition{Number: 1, StartLBA: 2048, Sectors: 4096, SectorSz: 512}
		copy(esp1.GUID[:], tGUID("11111111-2222-3333-4444-000000000001"))
		raw := readFile(t, filepath.Join(vars, "Boot0002-"+efiGlobalGUID))
		if want := append([]byte{7, 0, 0, 0}, encodeLoadOption("lpmos: debian 12", esp1, loader)...); !bytes.Equal(raw, want) {
			t.Errorf("Boot0002\n got %x\nwant %x", raw, want)
		}
		if o, err := parseLoadOption(raw[4:]); err != nil || !o.HasHD || o.HDGUID != esp1.GUID || o.Description != "lpmos: debian 12" {
			t.Errorf("Boot0002 parses as %+v, %v", o, err)
		}
		// The removable fallback: shim as BOOT<ARCH>.EFI, grub and
		// MokManager next to it; the distro files stay.
		for p, want := range map[string]string{
			"EFI/BOOT/BOOT" + upper + ".EFI": "SHIM", "EFI/BOOT/grub" + arch + ".efi": "GRUB", "EFI/BOOT/mm" + arch + ".efi": "MOKMANAGER",
			"EFI/debian/shim" + arch + ".efi": "SHIM",
		} {
			if got, ok := tESPRead(t, esp, p); !ok || got != want {
				t.Errorf("ESP %s = %q (present %v), want %q", p, got, ok, want)
			}
		}
		if _, err := readGPT(bytes.NewReader(disk)); err != nil {
			t.Errorf("the installed disk's GPT: %v", err)
		}
	})

	t.Run("ESP without a loader", func(t *testing.T) {
		vars := nvram(t)
		before, _ := os.ReadDir(vars)
		err, progress, disk, _ := install(t, noLoader, vars)
		if err == nil {
			t.Fatal("install succeeded with no boot loader on the ESP")
		}
		t.Logf("reason: %v", err)
		for _, want := range []string{"EFI system partition 1", "no UEFI boot loader on the EFI system partition", `\EFI\BOOT\BOOT` + upper + `.EFI`,
			`shim` + arch + `.efi`, `grub` + arch + `.efi`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("reason %q\nlacks %q", err, want)
			}
		}
		for _, p := range progress {
			if p.Stage == wire.StageConfiguring && p.Percentage == 100 {
				t.Fatalf("configuring reached 100%% on a failure: %+v", p)
			}
		}
		if _, err := readGPT(bytes.NewReader(disk)); err != errNoGPT {
			t.Errorf("after the failure the disk still has a GPT (err %v): firmware could try to boot it", err)
		}
		if parts, err := readPartitionTable(bytes.NewReader(disk)); err != nil || len(parts) != 0 {
			t.Errorf("after the failure the disk shows partitions %+v (%v)", parts, err)
		}
		for _, off := range []int64{512, int64(len(disk)) - 512} {
			if bytes.Equal(disk[off:off+8], []byte("EFI PART")) {
				t.Errorf("GPT header left at byte %d", off)
			}
		}
		after, _ := os.ReadDir(vars)
		if len(after) != len(before) {
			t.Errorf("firmware variables changed: %d before, %d after", len(before), len(after))
		}
		if got := decodeU16s(readFile(t, filepath.Join(vars, "BootOrder-"+efiGlobalGUID))[4:]); !reflect.DeepEqual(got, []uint16{1, 0}) {
			t.Errorf("BootOrder %04X changed by a failed install", got)
		}
	})
}
