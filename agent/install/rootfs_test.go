package install

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

// tPart is one partition of a test GPT disk.
type tPart struct {
	typ  string // type GUID
	name string
	data []byte // content; the partition is rounded up to whole MiB
}

// tMakeGPTDisk lays out a GPT disk with parts one after the other, each
// MiB-aligned as sgdisk does, plus extra spare sectors at the end. It
// returns the image and each partition's start byte.
func tMakeGPTDisk(t *testing.T, extraSectors int64, parts ...tPart) ([]byte, []int64) {
	t.Helper()
	const align = 2048
	lba := int64(align)
	entries := make([]byte, 128*128)
	var starts []int64
	for i, p := range parts {
		n := (int64(len(p.data)) + tSector - 1) / tSector
		n = (n + align - 1) / align * align
		e := entries[i*128:]
		copy(e[0:16], tGUID(p.typ))
		copy(e[16:32], tGUID(fmt.Sprintf("11111111-2222-3333-4444-%012d", i+1)))
		binary.LittleEndian.PutUint64(e[32:], uint64(lba))
		binary.LittleEndian.PutUint64(e[40:], uint64(lba+n-1))
		for j, r := range p.name {
			binary.LittleEndian.PutUint16(e[56+2*j:], uint16(r))
		}
		starts = append(starts, lba*tSector)
		lba += n
	}
	total := lba + 33 + extraSectors
	img := make([]byte, total*tSector)
	for i, p := range parts {
		copy(img[starts[i]:], p.data)
	}
	last := uint64(total - 1)
	hdr := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, 92)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 34)
		binary.LittleEndian.PutUint64(h[48:], last-33)
		copy(h[56:], tGUID("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"))
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
		return h
	}
	img[446+4] = 0xee
	binary.LittleEndian.PutUint32(img[446+8:], 1)
	binary.LittleEndian.PutUint32(img[446+12:], uint32(min(last, 0xffffffff)))
	img[510], img[511] = 0x55, 0xaa
	copy(img[1*tSector:], hdr(1, last, 2))
	copy(img[2*tSector:], entries)
	copy(img[(last-32)*tSector:], entries)
	copy(img[last*tSector:], hdr(last, 1, last-32))
	return img, starts
}

// tMkfsVfat makes a FAT file system image (an ESP) with mkfs.vfat.
func tMkfsVfat(t *testing.T, size int64) []byte {
	t.Helper()
	testenv.RequireTool(t, "mkfs.vfat", "dosfstools")
	p := filepath.Join(t.TempDir(), "esp.img")
	if out, err := exec.Command("mkfs.vfat", "-C", p, fmt.Sprint(size/1024)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v\n%s", err, out)
	}
	return readFile(t, p)
}

// tMkfsBtrfs makes a btrfs image whose installed system lives in
// subvolume subvol (as Ubuntu's "@"), the top level holding only
// subvolumes, so the default mount shows no os-release. mkfs.btrfs of
// btrfs-progs 6.2 has no --subvol, so the subvolume is created after
// mounting the image through a loop device (needs root).
func tMkfsBtrfs(t *testing.T, size int64, subvol string, files map[string]string) []byte {
	t.Helper()
	for _, tool := range []string{"mkfs.btrfs", "btrfs"} {
		testenv.RequireTool(t, tool, "btrfs-progs")
	}
	testenv.RequireRoot(t, "loop-mounting a btrfs image")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "btrfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("mkfs.btrfs", "-q", "-f", "-M", "-L", "root", img)
	run("mount", "-o", "loop", "-t", "btrfs", img, mnt)
	mounted := true
	defer func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
	}()
	run("btrfs", "-q", "subvolume", "create", filepath.Join(mnt, subvol))
	for name, content := range files {
		p := filepath.Join(mnt, subvol, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run("umount", mnt)
	mounted = false
	return readFile(t, img)
}

// tLVMPV is the start of an LVM2 physical volume of volume group vg: the
// label in sector 1, the pv_header pointing at a metadata area at 4 KiB
// whose text starts with "<vg> {", as pvcreate + vgcreate leave it.
func tLVMPV(vg string, size int) []byte {
	b := make([]byte, size)
	l := b[512:]
	copy(l, "LABELONE")
	binary.LittleEndian.PutUint64(l[8:], 1)
	binary.LittleEndian.PutUint32(l[20:], 32)
	copy(l[24:], "LVM2 001")
	pv := l[32:]
	copy(pv, "abcdefghijklmnopqrstuvwxyz012345")
	binary.LittleEndian.PutUint64(pv[32:], uint64(size))
	binary.LittleEndian.PutUint64(pv[40:], 1<<20) // data area at 1 MiB
	// zero size, then a zero pair ends the data area list
	binary.LittleEndian.PutUint64(pv[72:], 4096) // metadata area
	binary.LittleEndian.PutUint64(pv[80:], 1<<20-4096)
	binary.LittleEndian.PutUint32(l[16:], crc32.ChecksumIEEE(l[20:512])) // not what LVM uses; unchecked
	text := vg + " {\nid = \"x\"\nseqno = 1\n}\n"
	m := b[4096:]
	copy(m[4:], " LVM2 x[5A%r0N*>")
	binary.LittleEndian.PutUint32(m[20:], 1)
	binary.LittleEndian.PutUint64(m[24:], 4096)
	binary.LittleEndian.PutUint64(m[32:], 1<<20-4096)
	binary.LittleEndian.PutUint64(m[40:], 512)
	binary.LittleEndian.PutUint64(m[48:], uint64(len(text)))
	copy(m[512:], text)
	return b
}

// tMountRead mounts an image read-only with util-linux mount (an
// independent reader) and returns the content of path, "" if absent.
func tMountRead(t *testing.T, fsImage []byte, fstype, opts, path string) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(img, fsImage, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	o := "loop,ro"
	if opts != "" {
		o += "," + opts
	}
	if out, err := exec.Command("mount", "-t", fstype, "-o", o, img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	}()
	b, err := os.ReadFile(filepath.Join(mnt, path))
	if err != nil {
		return "", false
	}
	return string(b), true
}

func TestReadPartitionTable(t *testing.T) {
	gpt, _ := tMakeGPTDisk(t, 0,
		tPart{typ: guidBIOSBoot, name: "bios", data: []byte{1}},
		tPart{typ: guidESP, name: "EFI system", data: []byte{1}},
		tPart{typ: guidLinuxData, name: "root", data: make([]byte, 3<<20)},
	)
	mbr := make([]byte, 1<<20)
	mbr[510], mbr[511] = 0x55, 0xaa
	mbr[446+4] = 0x0c
	binary.LittleEndian.PutUint32(mbr[446+8:], 63)
	binary.LittleEndian.PutUint32(mbr[446+12:], 100)
	mbr[446+16+4] = 0x83
	binary.LittleEndian.PutUint32(mbr[446+16+8:], 2048)
	binary.LittleEndian.PutUint32(mbr[446+16+12:], 1000)
	tests := []struct {
		name string
		disk []byte
		want []wire.Partition
	}{
		{name: "gpt", disk: gpt, want: []wire.Partition{
			{Number: 1, Name: "bios", Type: guidBIOSBoot, StartBytes: 1 << 20, SizeBytes: 1 << 20},
			{Number: 2, Name: "EFI system", Type: guidESP, StartBytes: 2 << 20, SizeBytes: 1 << 20},
			{Number: 3, Name: "root", Type: guidLinuxData, StartBytes: 3 << 20, SizeBytes: 3 << 20},
		}},
		{name: "mbr", disk: mbr, want: []wire.Partition{
			{Number: 1, Type: "0x0c", StartBytes: 63 * 512, SizeBytes: 100 * 512},
			{Number: 2, Type: "0x83", StartBytes: 2048 * 512, SizeBytes: 1000 * 512},
		}},
		{name: "no table", disk: make([]byte, 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readPartitionTable(bytes.NewReader(tt.disk))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	if g := formatGUID(tGUID(guidRootX86_64)); g != guidRootX86_64 {
		t.Errorf("formatGUID round trip: %s", g)
	}
}

func TestSniffFSAndLVMName(t *testing.T) {
	pv := tLVMPV("vg_system", 1<<20)
	if fs := sniffFS(pv[:sniffLen]); fs != "lvm2" {
		t.Errorf("LVM PV sniffed as %q", fs)
	}
	if vg := lvmVGName(bytes.NewReader(pv)); vg != "vg_system" {
		t.Errorf("VG name %q", vg)
	}
	broken := bytes.Clone(pv)
	copy(broken[4096+4:], "not the magic!!!")
	if vg := lvmVGName(bytes.NewReader(broken)); vg != "" {
		t.Errorf("VG name from a broken metadata area: %q", vg)
	}
	if fs := sniffFS(make([]byte, sniffLen)); fs != "" {
		t.Errorf("zeros sniffed as %q", fs)
	}
	if fs := sniffFS(tMkfsVfat(t, 2<<20)); fs != "vfat" {
		t.Errorf("vfat sniffed as %q", fs)
	}
}

// installImage runs a full install of image onto a larger file disk and
// returns the error, the progress and the disk.
func installImage(t *testing.T, image []byte) (error, []Progress, []byte) {
	t.Helper()
	srv := newImageServer(t, gz(t, image), 0)
	disk := newDisk(t, int64(len(image))+8<<20)
	// Non-zero start and end, so a wipe is observable.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), st.Size()-4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rec := &recorder{}
	spec := wire.InstallSpec{OSType: "debian", OSVersion: "12", ImageURL: srv.URL + "/img", ImageSHA256: sha(image),
		ImageSize: int64(len(image)), ImageFormat: "gzip", Hostname: "web-01",
		SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@lpmos"}}
	err = Install(context.Background(), spec, testOptions(t, disk, rec))
	return err, rec.all(), readFile(t, disk)
}

// tRoles is "number:role:fs" of each reported partition.
func tRoles(parts []wire.Partition) string {
	var s []string
	for _, p := range parts {
		s = append(s, fmt.Sprintf("%d:%s:%s", p.Number, p.Role, p.FS))
	}
	return strings.Join(s, " ")
}

// The root file system is found by type GUID and os-release, never by
// table order; each way of not finding it fails the task with a reason
// that names the partitions, and leaves no valid-looking table behind.
func TestInstallFindsTheRootFileSystem(t *testing.T) {
	osRelease := map[string]string{"etc/os-release": "ID=debian\nVERSION_ID=12\n", "etc/hostname": "debian\n"}
	boot := tMkfsExt4(t, 4<<20, map[string]string{"vmlinuz-6.1.0-18-amd64": "kernel", "grub/grub.cfg": "set default=0\n"})
	root := tMkfsExt4(t, 4<<20, osRelease)
	usrRoot := tMkfsExt4(t, 4<<20, map[string]string{"usr/lib/os-release": "ID=fedora\n"})
	data := tMkfsExt4(t, 4<<20, map[string]string{"srv/data.txt": "no system here\n"})
	esp := tMkfsVfat(t, 2<<20)
	// A root whose var/lib/cloud is a file: the seed cannot be written.
	blocked := tMkfsExt4(t, 4<<20, map[string]string{"etc/os-release": "ID=debian\n", "var/lib/cloud": "not a directory\n"})
	btrfs := tMkfsBtrfs(t, 32<<20, "@", osRelease)

	tests := []struct {
		name      string
		parts     []tPart
		wantSeed  int    // partition number the seed must be in (0: failure expected)
		fstype    string // of that partition
		opts      string // mount options to read it back
		wantMsg   string // in the last progress message
		wantRoles string
		wantErr   []string
	}{
		{name: "/boot first (RHEL layout)", parts: []tPart{
			{typ: guidBIOSBoot, name: "bios", data: []byte{0}},
			{typ: guidESP, name: "EFI", data: esp},
			{typ: guidLinuxData, name: "boot", data: boot},
			{typ: guidLinuxData, name: "root", data: root},
		}, wantSeed: 4, fstype: "ext4", wantMsg: "seed written to partition 4 (ext4)",
			wantRoles: "1:bios_boot: 2:esp:vfat 3:boot:ext4 4:root:ext4"},
		{name: "discoverable root type beats table order", parts: []tPart{
			{typ: guidLinuxData, name: "other", data: root},
			{typ: guidRootX86_64, name: "root-x86-64", data: usrRoot},
		}, wantSeed: 2, fstype: "ext4", wantMsg: "seed written to partition 2 (ext4)",
			wantRoles: "1::ext4 2:root:ext4"},
		{name: "data partition first, root second", parts: []tPart{
			{typ: guidLinuxData, name: "srv", data: data},
			{typ: guidLinuxData, name: "root", data: root},
		}, wantSeed: 2, fstype: "ext4", wantRoles: "1::ext4 2:root:ext4"},
		{name: "btrfs root subvolume", parts: []tPart{
			{typ: guidESP, name: "EFI", data: esp},
			{typ: guidLinuxData, name: "root", data: btrfs},
		}, wantSeed: 2, fstype: "btrfs", opts: "subvol=@", wantMsg: "seed written to partition 2 (btrfs, subvol=@)",
			wantRoles: "1:esp:vfat 2:root:btrfs"},
		{name: "LVM root", parts: []tPart{
			{typ: guidESP, name: "EFI", data: esp},
			{typ: guidLinuxData, name: "boot", data: boot},
			{typ: guidLinuxLVM, name: "pv", data: tLVMPV("rhel", 2<<20)},
		}, wantErr: []string{`root file system is on LVM volume group "rhel" (partition 3)`,
			"lpmos cannot write the seed into LVM yet", `3 "pv" (Linux LVM, 2.0 MiB, lvm2)`}},
		{name: "no Linux root", parts: []tPart{
			{typ: guidESP, name: "EFI", data: esp},
			{typ: guidLinuxData, name: "srv", data: data},
			{typ: guidMSBasicData, name: "win", data: []byte("NTFS")},
		}, wantErr: []string{"no Linux root file system in the image", "partition 2 (ext4): no etc/os-release",
			`1 "EFI" (EFI System, 2.0 MiB, vfat)`, `3 "win" (Microsoft basic data, 1.0 MiB)`}},
		{name: "seed cannot be written", parts: []tPart{
			{typ: guidLinuxData, name: "root", data: blocked},
		}, wantErr: []string{"cloud-init seed not written to partition 1 (ext4)", "var/lib/cloud"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			image, starts := tMakeGPTDisk(t, 7, tt.parts...)
			err, progress, disk := installImage(t, image)
			if tt.wantSeed == 0 {
				if err == nil {
					t.Fatal("install succeeded, want a failure")
				}
				t.Logf("reason: %v", err)
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q\nlacks %q", err, w)
					}
				}
				for _, p := range progress {
					if p.Stage == wire.StageConfiguring && p.Percentage == 100 {
						t.Fatalf("configuring reached 100%% on a failure: %+v", p)
					}
				}
				for _, area := range [][2]int{{0, 4096}, {len(image) - 4096, len(image)}, {len(disk) - 4096, len(disk)}} {
					if !bytes.Equal(disk[area[0]:area[1]], make([]byte, area[1]-area[0])) {
						t.Errorf("bytes %d-%d not wiped after the failure", area[0], area[1])
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Install: %v", err)
			}
			last := progress[len(progress)-1]
			if tt.wantMsg != "" && !strings.Contains(last.Message, tt.wantMsg) {
				t.Errorf("final message %q, want %q", last.Message, tt.wantMsg)
			}
			if got := tRoles(last.Partitions); got != tt.wantRoles {
				t.Errorf("partitions reported %q, want %q", got, tt.wantRoles)
			}
			for i, p := range tt.parts {
				n := i + 1
				size := int64(len(p.data)+(1<<20)-1) / (1 << 20) * (1 << 20)
				fs := disk[starts[i] : starts[i]+size]
				if n == tt.wantSeed {
					meta, ok := tMountRead(t, fs, tt.fstype, tt.opts, NoCloudDir+"/meta-data")
					if !ok || !strings.Contains(meta, `local-hostname: "web-01"`) {
						t.Errorf("partition %d: meta-data %q (present %v)", n, meta, ok)
					}
					continue
				}
				if !bytes.Equal(fs, padTo(p.data, len(fs))) {
					t.Errorf("partition %d (%s) was modified: only the root may receive the seed", n, p.name)
				}
			}
		})
	}
}

func padTo(b []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}

// On a real block device (a loop device with partition scanning, as a
// disk is) the agent re-reads the table and probes the kernel's partition
// nodes (/dev/loopNpM); where the kernel has no parser for the table (this
// CI host's kernel is built without CONFIG_EFI_PARTITION, so no loopNpM
// appears) it falls back to loop devices over the disk's byte ranges.
// Either way /boot first must not get the seed.
func TestInstallRootOnBlockDevice(t *testing.T) {
	testenv.RequireTool(t, "losetup", "util-linux")
	testenv.RequireRoot(t, "loop devices")
	boot := tMkfsExt4(t, 4<<20, map[string]string{"vmlinuz-6.1.0-18-amd64": "kernel", "grub/grub.cfg": "x\n"})
	root := tMkfsExt4(t, 4<<20, map[string]string{"etc/os-release": "ID=rhel\n"})
	image, starts := tMakeGPTDisk(t, 0,
		tPart{typ: guidLinuxData, name: "boot", data: boot},
		tPart{typ: guidLinuxData, name: "root", data: root})
	file := newDisk(t, int64(len(image))+4<<20)
	out, err := exec.Command("losetup", "-P", "-f", "--show", file).Output()
	if err != nil {
		t.Fatalf("losetup -P: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	srv := newImageServer(t, image, 0)
	rec := &recorder{}
	spec := wire.InstallSpec{ImageURL: srv.URL + "/img", ImageSHA256: sha(image), ImageSize: int64(len(image)), ImageFormat: "raw", Hostname: "db-1"}
	if err := Install(context.Background(), spec, testOptions(t, dev, rec)); err != nil {
		t.Fatalf("Install to %s: %v", dev, err)
	}
	all := rec.all()
	last := all[len(all)-1]
	if !strings.Contains(last.Message, "partition 2 (ext4)") || tRoles(last.Partitions) != "1:boot:ext4 2:root:ext4" {
		t.Fatalf("last report %q, partitions %q", last.Message, tRoles(last.Partitions))
	}
	disk := readFile(t, file)
	if meta, ok := tMountRead(t, disk[starts[1]:starts[1]+4<<20], "ext4", "", NoCloudDir+"/meta-data"); !ok || !strings.Contains(meta, `"db-1"`) {
		t.Errorf("seed in the root: %q %v", meta, ok)
	}
	if !bytes.Equal(disk[starts[0]:starts[0]+4<<20], boot) {
		t.Error("/boot was modified")
	}
}
