package install

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

// checkStages asserts the seed's stage order and percentage ranges, and
// that percentages never go backwards.
func checkStages(t *testing.T, got []Progress, wantLast Progress) {
	t.Helper()
	ranges := map[string][2]int{
		wire.StagePartitioning: {0, 20}, wire.StageDownloading: {20, 60},
		wire.StageInstalling: {60, 90}, wire.StageConfiguring: {90, 100},
	}
	order := []string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring}
	stageIdx, pct := 0, 0
	for _, p := range got {
		r, ok := ranges[p.Stage]
		if !ok {
			t.Fatalf("unknown stage %q", p.Stage)
		}
		for order[stageIdx] != p.Stage {
			stageIdx++
			if stageIdx == len(order) {
				t.Fatalf("stage %q out of order in %+v", p.Stage, got)
			}
		}
		if p.Percentage < r[0] || p.Percentage > r[1] || p.Percentage < pct {
			t.Fatalf("%s at %d%% (previous %d%%) outside %v", p.Stage, p.Percentage, pct, r)
		}
		pct = p.Percentage
	}
	if len(got) == 0 {
		t.Fatal("no progress reported")
	}
	last := got[len(got)-1]
	if last.Stage != wantLast.Stage || last.Percentage != wantLast.Percentage {
		t.Fatalf("last progress %+v, want %s %d%%", last, wantLast.Stage, wantLast.Percentage)
	}
}

func TestInstallStreamsResumesAndVerifies(t *testing.T) {
	// A root file system (the seed goes there) and a partition of random
	// bytes, compared byte for byte after the install.
	root := tMkfsExt4(t, 2<<20, map[string]string{"etc/os-release": "ID=debian\n"})
	payload := make([]byte, 3<<20+12345) // not a multiple of anything
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	raw, starts := tMakeGPTDisk(t, 15, tPart{typ: guidLinuxData, name: "root", data: root},
		tPart{typ: guidMSBasicData, name: "payload", data: payload})
	rootEnd := starts[0] + int64(len(root))
	tests := []struct {
		name     string
		format   string
		served   []byte
		dropAt   int
		wantResu bool
	}{
		{name: "raw", format: "raw", served: raw},
		{name: "raw dropped mid-stream", format: "raw", served: raw, dropAt: 4<<20 + 7, wantResu: true},
		{name: "gzip dropped mid-stream", format: "gzip", served: gz(t, raw), dropAt: 99_999, wantResu: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newImageServer(t, tt.served, tt.dropAt)
			disk := newDisk(t, 16<<20)
			rec := &recorder{}
			spec := wire.InstallSpec{ImageURL: srv.URL + "/images/debian/12", ImageSHA256: sha(raw),
				ImageSize: int64(len(raw)), ImageFormat: tt.format}
			if err := Install(context.Background(), spec, testOptions(t, disk, rec)); err != nil {
				t.Fatalf("Install: %v", err)
			}
			got := readFile(t, disk)
			// The seed changed the root file system; everything else is the
			// image, except the GPT backup, which moved to the disk's end.
			if !bytes.Equal(got[rootEnd:len(raw)-33*512], raw[rootEnd:len(raw)-33*512]) {
				t.Fatal("disk content after the root file system differs from the image")
			}
			if !bytes.Equal(got[len(raw):len(got)-33*512], make([]byte, len(got)-len(raw)-33*512)) {
				t.Fatal("bytes after the image were touched")
			}
			reqs := srv.requests()
			if tt.wantResu {
				if len(reqs) < 2 || reqs[0] != "" || reqs[1] != "bytes="+strconv.Itoa(tt.dropAt)+"-" {
					t.Fatalf("requests %q: want a first full GET then Range from byte %d", reqs, tt.dropAt)
				}
			} else if len(reqs) != 1 {
				t.Fatalf("requests %q, want 1", reqs)
			}
			all := rec.all()
			checkStages(t, all, Progress{Stage: wire.StageConfiguring, Percentage: 100})
			var sawBytes bool
			for _, p := range all {
				if p.Stage == wire.StageDownloading && p.BytesDone > 0 && p.BytesDone < int64(len(raw)) && p.BytesTotal == int64(len(raw)) {
					sawBytes = true
				}
			}
			if !sawBytes {
				t.Error("no intermediate downloading progress with bytes_done/bytes_total")
			}
		})
	}
}

func TestInstallFailures(t *testing.T) {
	good := bytes.Repeat([]byte("lpmos image "), 200_000) // 2.4 MB
	corrupt := bytes.Clone(good)
	corrupt[1_000_000] ^= 0xff
	// A gzip stream with a flipped byte after its first blocks, and one
	// cut short: the disk has been written to when the decompressor
	// notices, so both must leave it wiped.
	gzGood := gz(t, good)
	gzCorrupt := bytes.Clone(gzGood)
	gzCorrupt[len(gzCorrupt)*3/4] ^= 0xff
	gzTruncated := gzGood[:len(gzGood)*3/4]
	tests := []struct {
		name     string
		served   []byte
		format   string // default raw
		status   int
		diskSize int64
		size     int64
		wantErr  string
		wantWipe bool // the start of the disk must be zero afterwards
	}{
		{name: "corrupted image", served: corrupt, diskSize: 4 << 20, wantErr: "checksum mismatch", wantWipe: true},
		{name: "disk smaller than image", served: good, diskSize: 1 << 20, wantErr: "is too small"},
		{name: "image larger than announced", served: append(bytes.Clone(good), 1), diskSize: 4 << 20, wantErr: "bytes, the install spec says", wantWipe: true},
		{name: "image larger than disk", served: good, diskSize: 2 << 20, size: 1 << 20, wantErr: "larger than the disk", wantWipe: true},
		{name: "corrupt gzip stream", served: gzCorrupt, format: "gzip", diskSize: 4 << 20, wantErr: "image: the gzip stream is corrupt", wantWipe: true},
		{name: "truncated gzip stream", served: gzTruncated, format: "gzip", diskSize: 4 << 20, wantErr: "image: the gzip stream ends early (truncated image)", wantWipe: true},
		{name: "image missing", status: 404, diskSize: 4 << 20, wantErr: "HTTP 404"},
		{name: "server keeps failing", status: 503, diskSize: 4 << 20, wantErr: "giving up after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newImageServer(t, tt.served, 0)
			srv.status = tt.status
			disk := newDisk(t, tt.diskSize)
			// Pre-fill the disk start so wiping is observable.
			if err := os.WriteFile(disk, bytes.Repeat([]byte{0xaa}, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(disk, tt.diskSize); err != nil {
				t.Fatal(err)
			}
			// ... and its end, where a backup GPT would be.
			f, err := os.OpenFile(disk, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), tt.diskSize-4096); err != nil {
				t.Fatal(err)
			}
			f.Close()
			size := tt.size
			if size == 0 {
				size = int64(len(good))
			}
			rec := &recorder{}
			format := tt.format
			if format == "" {
				format = "raw"
			}
			spec := wire.InstallSpec{ImageURL: srv.URL + "/img", ImageSHA256: sha(good), ImageSize: size, ImageFormat: format}
			err = Install(context.Background(), spec, testOptions(t, disk, rec))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			for _, p := range rec.all() {
				if p.Stage == wire.StageInstalling || p.Stage == wire.StageConfiguring || p.Stage == wire.StageCompleted {
					t.Fatalf("reported %+v after a failed download", p)
				}
			}
			got := readFile(t, disk)
			if wiped := bytes.Equal(got[:4096], make([]byte, 4096)); wiped != tt.wantWipe {
				t.Fatalf("disk start wiped = %v, want %v", wiped, tt.wantWipe)
			}
			if wiped := bytes.Equal(got[len(got)-4096:], make([]byte, 4096)); wiped != tt.wantWipe {
				t.Fatalf("disk end (backup GPT) wiped = %v, want %v", wiped, tt.wantWipe)
			}
			if tt.name == "corrupted image" {
				if end := got[len(good)-4096 : len(good)]; !bytes.Equal(end, make([]byte, 4096)) {
					t.Fatal("the end of the written image (its backup GPT) was not wiped")
				}
			}
		})
	}
}

func TestInstallRejectsBadSpecs(t *testing.T) {
	rec := &recorder{}
	for _, spec := range []wire.InstallSpec{
		{ImageSHA256: sha(nil), ImageSize: 1},
		{ImageURL: "http://x", ImageSHA256: "abc", ImageSize: 1},
		{ImageURL: "http://x", ImageSHA256: sha(nil), ImageSize: 1, ImageFormat: "qcow2"},
		{ImageURL: "http://x", ImageSHA256: sha(nil)},
	} {
		if err := Install(context.Background(), spec, testOptions(t, "/dev/null", rec)); err == nil {
			t.Errorf("spec %+v accepted", spec)
		}
	}
	if len(rec.all()) != 0 {
		t.Errorf("progress reported for invalid specs: %+v", rec.all())
	}
}

// A GPT image on a larger disk: the backup GPT must end up at the last
// LBA with valid CRCs, and the NoCloud seed must be readable in the
// installed ext4 by an independent tool (debugfs).
func TestInstallGPTImageWithSeed(t *testing.T) {
	fs := tMkfsExt4(t, 8<<20, map[string]string{
		"etc/hostname":           "debian\n",
		"etc/os-release":         "ID=debian\nVERSION_ID=12\n",
		"var/lib/cloud/.keep":    "",
		"usr/lib/os-release.txt": "placeholder\n",
	})
	const imageSectors = 2048 + (8<<20)/512 + 33 + 15 // ends off any MiB boundary
	image := tMakeGPTImage(t, fs, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", imageSectors)
	srv := newImageServer(t, gz(t, image), 0)
	disk := newDisk(t, 64<<20)
	rec := &recorder{}
	spec := wire.InstallSpec{
		OSType: "debian", OSVersion: "12",
		ImageURL: srv.URL + "/images/debian/12", ImageSHA256: sha(image), ImageSize: int64(len(image)), ImageFormat: "gzip",
		Hostname:          "web-01",
		SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@lpmos"},
		Network:           &wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.1", MAC: "52:54:00:12:34:56"},
	}
	if err := Install(context.Background(), spec, testOptions(t, disk, rec)); err != nil {
		t.Fatalf("Install: %v", err)
	}
	all := rec.all()
	checkStages(t, all, Progress{Stage: wire.StageConfiguring, Percentage: 100})
	if msg := all[len(all)-1].Message; !strings.Contains(msg, "seed written to partition 1 (ext4)") {
		t.Errorf("final message %q", msg)
	}

	got := readFile(t, disk)
	alt, lastUsable := tCheckGPT(t, got)
	if want := uint64(len(got)/512 - 1 - 32 - 1); lastUsable != want {
		t.Errorf("LastUsableLBA = %d, want %d", lastUsable, want)
	}
	if alt != uint64(len(got)/512-1) {
		t.Errorf("AlternateLBA = %d", alt)
	}
	if old := got[(imageSectors-1)*512:][:8]; string(old) == "EFI PART" {
		t.Error("stale backup GPT header left at the end of the image")
	}
	if n := binary.LittleEndian.Uint32(got[446+12:]); n != uint32(len(got)/512-1) {
		t.Errorf("protective MBR covers %d sectors", n)
	}

	part := got[2048*512 : 2048*512+8<<20]
	meta := tDebugfsCat(t, part, "/var/lib/cloud/seed/nocloud/meta-data")
	for _, want := range []string{`instance-id: "task-7"`, `local-hostname: "web-01"`, "ssh-ed25519 AAAAC3"} {
		if !strings.Contains(meta, want) {
			t.Errorf("meta-data lacks %q:\n%s", want, meta)
		}
	}
	user := tDebugfsCat(t, part, "/var/lib/cloud/seed/nocloud/user-data")
	if !strings.HasPrefix(user, "#cloud-config\n") || !strings.Contains(user, `hostname: "web-01"`) ||
		!strings.Contains(user, "ssh_authorized_keys:\n  - \"ssh-ed25519 AAAAC3") {
		t.Errorf("user-data:\n%s", user)
	}
	if nc := tDebugfsCat(t, part, "/var/lib/cloud/seed/nocloud/network-config"); !strings.Contains(nc, "version: 1\n") ||
		!strings.Contains(nc, `mac_address: "52:54:00:12:34:56"`) || !strings.Contains(nc, `address: "10.0.0.5/24"`) {
		t.Errorf("network-config:\n%s", nc)
	}
	if host := tDebugfsCat(t, part, "/etc/hostname"); host != "debian\n" {
		t.Errorf("image content damaged: /etc/hostname = %q", host)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatalf("loop-control vanished: %v", err)
	}
}

func TestRelocateBackupGPT(t *testing.T) {
	tests := []struct {
		name      string
		image     func() []byte
		diskBytes int64
		wantMoved bool
		wantErr   string
	}{
		{name: "larger disk", image: func() []byte { return tMakeGPTImage(t, []byte("x"), "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 4096) }, diskBytes: 10 << 20, wantMoved: true},
		{name: "same size", image: func() []byte { return tMakeGPTImage(t, []byte("x"), "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 4096) }, diskBytes: 4096 * 512},
		{name: "no GPT", image: func() []byte { return make([]byte, 1<<20) }, diskBytes: 2 << 20},
		{name: "corrupt header", image: func() []byte {
			b := tMakeGPTImage(t, []byte("x"), "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 4096)
			b[512+40] ^= 1
			return b
		}, diskBytes: 10 << 20, wantErr: "header CRC"},
		{name: "corrupt partition array", image: func() []byte {
			b := tMakeGPTImage(t, []byte("x"), "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 4096)
			b[2*512+100] ^= 1
			return b
		}, diskBytes: 10 << 20, wantErr: "partition array CRC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := make([]byte, tt.diskBytes)
			copy(disk, tt.image())
			rw := &memDisk{b: disk}
			moved, err := relocateBackupGPT(rw, tt.diskBytes)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || moved != tt.wantMoved {
				t.Fatalf("moved=%v err=%v, want moved=%v", moved, err, tt.wantMoved)
			}
			if tt.name != "no GPT" {
				tCheckGPT(t, rw.b)
			}
		})
	}
}

type memDisk struct{ b []byte }

func (m *memDisk) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

func TestHelpers(t *testing.T) {
	for disk, want := range map[string]string{"/dev/vda": "/dev/vda1", "/dev/nvme0n1": "/dev/nvme0n1p1", "/dev/sda": "/dev/sda1", "/dev/mmcblk0": "/dev/mmcblk0p1"} {
		if got := partitionDevice(disk, 1); got != want {
			t.Errorf("partitionDevice(%s) = %s, want %s", disk, got, want)
		}
	}
	for in, want := range map[string][2]int64{"bytes 100-199/1000": {100, 1000}, "bytes 0-9/*": {0, -1}} {
		s, tot, err := parseContentRange(in)
		if err != nil || s != want[0] || tot != want[1] {
			t.Errorf("parseContentRange(%q) = %d %d %v", in, s, tot, err)
		}
	}
	for _, bad := range []string{"", "bytes", "bytes x-1/2", "items 1-2/3"} {
		if _, _, err := parseContentRange(bad); err == nil {
			t.Errorf("parseContentRange(%q) accepted", bad)
		}
	}
	if got := string(NoCloudUserData(wire.InstallSpec{UserData: "#!/bin/sh\necho hi\n"})); got != "#!/bin/sh\necho hi\n" {
		t.Errorf("user_data not verbatim: %q", got)
	}
	if got := string(NoCloudMetaData("t1", wire.InstallSpec{Hostname: `we"ird: #host`})); got != "instance-id: \"t1\"\nlocal-hostname: \"we\\\"ird: #host\"\n" {
		t.Errorf("meta-data quoting: %q", got)
	}
	if got := human(3 << 29); got != "1.5 GiB" {
		t.Errorf("human = %q", got)
	}
}
