package disksel

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/wire"
)

// disks4 reads the four-disk sysfs fixture: nvme0n1 480 GB SAMSUNG SSD,
// sda 240 GB INTEL SATA SSD, sdb 4 TB Seagate HDD, sdc 31 GB USB stick.
func disks4(t *testing.T) []wire.Disk {
	t.Helper()
	d, err := hw.Disks(filepath.Join("..", "..", "testdata", "agent", "disks4"))
	if err != nil || len(d) != 4 {
		t.Fatalf("disks4 fixture: %d disks, %v", len(d), err)
	}
	return d
}

func ptr[T any](v T) *T { return &v }

func TestSelect(t *testing.T) {
	disks := disks4(t)
	const img = 2 << 30
	tests := []struct {
		name    string
		hints   *wire.RootDeviceHints
		need    int64
		want    string
		wantErr error
		errHas  []string
	}{
		{name: "no hints: smallest fixed disk that fits", want: "sda", need: img},
		{name: "no hints, big image: next size up", want: "nvme0n1", need: 300e9},
		{name: "no hints, nothing fits", need: 5e12, wantErr: ErrNoMatch,
			errHas: []string{"/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456", "/dev/sdc, 31 GB, SanDisk Cruzer Blade", "removable"}},
		{name: "empty hints are no hints", hints: &wire.RootDeviceHints{}, want: "sda", need: img},

		// Each disk selected by a hint.
		{name: "name", hints: &wire.RootDeviceHints{Name: "nvme0n1"}, want: "nvme0n1"},
		{name: "name with /dev/", hints: &wire.RootDeviceHints{Name: "/dev/sdb"}, want: "sdb"},
		{name: "serial, any case", hints: &wire.RootDeviceHints{Serial: "phyf912345ab240agn"}, want: "sda"},
		{name: "wwn as 0x", hints: &wire.RootDeviceHints{WWN: "0x5000C500A1B2C3D4"}, want: "sdb"},
		{name: "wwn as the kernel shows it", hints: &wire.RootDeviceHints{WWN: "eui.0025388b91c0ffee"}, want: "nvme0n1"},
		{name: "model exact", hints: &wire.RootDeviceHints{Model: "SAMSUNG MZQLB480HAJQ-00007"}, want: "nvme0n1"},
		{name: "by-path", hints: &wire.RootDeviceHints{ByPath: "/dev/disk/by-path/pci-0000:00:17.0-ata-2.0"}, want: "sdb"},
		{name: "by-path, old ata form", hints: &wire.RootDeviceHints{ByPath: "pci-0000:00:17.0-ata-1"}, want: "sda"},
		{name: "rotational", hints: &wire.RootDeviceHints{Rotational: ptr(true)}, want: "sdb"},
		{name: "size range", hints: &wire.RootDeviceHints{MinSizeBytes: 400e9, MaxSizeBytes: 1e12}, want: "nvme0n1"},
		{name: "min size only", hints: &wire.RootDeviceHints{MinSizeBytes: 1e12}, want: "sdb"},
		{name: "vendor and rotational false", hints: &wire.RootDeviceHints{Vendor: "ata", Rotational: ptr(false)}, want: "sda"},

		// Failures: nothing is chosen, the reason lists the disks.
		{name: "no match", hints: &wire.RootDeviceHints{Serial: "NOPE"}, wantErr: ErrNoMatch,
			errHas: []string{"serial=NOPE", "/dev/nvme0n1, 480 GB", "/dev/sda, 240 GB, INTEL SSDSC2KB240G8, serial PHYF912345AB240AGN", "/dev/sdb, 4.0 TB", "/dev/sdc"}},
		{name: "the usb stick is never chosen", hints: &wire.RootDeviceHints{Name: "sdc"}, wantErr: ErrNoMatch, errHas: []string{"removable disks are never chosen"}},
		{name: "ambiguous", hints: &wire.RootDeviceHints{Rotational: ptr(false)}, wantErr: ErrAmbiguous,
			errHas: []string{"/dev/nvme0n1", "/dev/sda", "tells them apart"}},
		{name: "ambiguous vendor", hints: &wire.RootDeviceHints{Vendor: "ATA"}, wantErr: ErrAmbiguous, errHas: []string{"/dev/sda", "/dev/sdb"}},
		{name: "one match, too small", hints: &wire.RootDeviceHints{Name: "sda"}, need: 300e9, wantErr: ErrTooSmall, errHas: []string{"/dev/sda, 240 GB", "300 GB"}},
		{name: "max below every fixed disk", hints: &wire.RootDeviceHints{MaxSizeBytes: 100e9}, wantErr: ErrNoMatch},
		{name: "name hint is not a substring", hints: &wire.RootDeviceHints{Name: "sd"}, wantErr: ErrNoMatch},
		{name: "model hint is not a substring", hints: &wire.RootDeviceHints{Model: "SAMSUNG"}, wantErr: ErrNoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Select(disks, tt.hints, tt.need)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !IsSelection(err) {
					t.Fatalf("Select = %s, %v; want %v", got.Name, err, tt.wantErr)
				}
				for _, s := range tt.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q\ndoes not mention %q", err, s)
					}
				}
				return
			}
			if err != nil || got.Name != tt.want {
				t.Fatalf("Select = %q, %v; want %q", got.Name, err, tt.want)
			}
		})
	}
}

func TestSelectOnlyRemovable(t *testing.T) {
	stick := disks4(t)[3:]
	_, err := Select(stick, nil, 0)
	if !errors.Is(err, ErrNoMatch) || !strings.Contains(err.Error(), "no fixed (non-removable) disk among 1: /dev/sdc, 31 GB, SanDisk Cruzer Blade") {
		t.Fatalf("Select(usb stick only) = %v", err)
	}
	if _, err := Select(nil, nil, 1<<30); !strings.Contains(fmt.Sprint(err), "of at least 1 GB among 0: (none reported)") {
		t.Fatalf("Select(no disks) = %v", err)
	}
}

func TestResolve(t *testing.T) {
	disks := disks4(t)
	for sel, want := range map[string]string{
		"nvme0n1": "nvme0n1", "/dev/sdb": "sdb", "S4EMNX0R123456": "nvme0n1", "zc1a2b3c": "sdb",
		"naa.55cd2e415a1b2c3d": "sda", "0x55cd2e415a1b2c3d": "sda", "pci-0000:00:14.0-usb-0:4:1.0-scsi-0:0:0:0": "sdc",
	} {
		got, err := Resolve(disks, sel)
		if err != nil || got.Name != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", sel, got.Name, err, want)
		}
	}
	for _, sel := range []string{"", "sdz", "sd", "SAMSUNG"} {
		if got, err := Resolve(disks, sel); !errors.Is(err, ErrNoMatch) {
			t.Errorf("Resolve(%q) = %q, %v; want no match", sel, got.Name, err)
		}
	}
	// Two disks sharing a serial (a cloned VM): refused, not guessed.
	dup := []wire.Disk{{Name: "vda", Serial: "X"}, {Name: "vdb", Serial: "X"}}
	if _, err := Resolve(dup, "X"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("duplicate serial: %v, want ambiguous", err)
	}
}

func TestSame(t *testing.T) {
	disks := disks4(t)
	nvme := disks[0]
	if err := Same(nvme, nvme); err != nil {
		t.Fatal(err)
	}
	swapped := disks[1]
	swapped.Name = nvme.Name // another disk now answers to nvme0n1
	for name, got := range map[string]wire.Disk{
		"other disk":     swapped,
		"other serial":   func() wire.Disk { d := nvme; d.Serial = "S4EMNX0R999999"; return d }(),
		"other size":     func() wire.Disk { d := nvme; d.SizeBytes -= 512; return d }(),
		"wwn disappears": func() wire.Disk { d := nvme; d.WWN = ""; return d }(),
	} {
		err := Same(nvme, got)
		if err == nil || !strings.Contains(err.Error(), "not the disk chosen") {
			t.Errorf("%s: Same = %v, want a mismatch", name, err)
		}
	}
	// A disk the server knew without serial or wwn (virtio without serial)
	// is checked by size.
	if err := Same(wire.Disk{Name: "vda", SizeBytes: 1 << 30}, wire.Disk{Name: "vda", SizeBytes: 1 << 30, Serial: "new"}); err != nil {
		t.Errorf("size-only identity: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"480103981056": 480103981056, "100G": 100e9, "100 GB": 100e9, "1.5TB": 1.5e12, "512GiB": 512 << 30,
		"4t": 4e12, "10mib": 10 << 20, "0": 0, "2K": 2000,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "10X", "-5G", "1.5", "1e3", "ten"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseHints(t *testing.T) {
	h, err := ParseHints("name=/dev/sda, min-size=100G,max_size=2TB,rotational=false,model=INTEL SSDSC2KB240G8")
	if err != nil {
		t.Fatal(err)
	}
	want := wire.RootDeviceHints{Name: "/dev/sda", MinSizeBytes: 100e9, MaxSizeBytes: 2e12, Rotational: ptr(false), Model: "INTEL SSDSC2KB240G8"}
	if String(h) != String(want) {
		t.Errorf("ParseHints = %s, want %s", String(h), String(want))
	}
	if got, _ := Select(disks4(t), &h, 0); got.Name != "sda" {
		t.Errorf("parsed hints select %q, want sda", got.Name)
	}
	for in, msg := range map[string]string{
		"size=100G":                "unknown key",
		"name":                     "want key=value",
		"min-size=lots":            "min-size",
		"rotational=maybe":         "rotational",
		"min-size=2T,max-size=1T":  "min_size_bytes",
		"name=/dev/disk/by-id/abc": "use by_path",
		"serial= ":                 "want key=value",
	} {
		if _, err := ParseHints(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseHints(%q) = %v, want an error mentioning %q", in, err, msg)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		h     wire.RootDeviceHints
		field string
	}{
		{wire.RootDeviceHints{Serial: "  "}, "root_device_hints.serial"},
		{wire.RootDeviceHints{Model: "a\nb"}, "root_device_hints.model"},
		{wire.RootDeviceHints{WWN: strings.Repeat("a", 257)}, "root_device_hints.wwn"},
		{wire.RootDeviceHints{Name: "disk/by-id/x"}, "root_device_hints.name"},
		{wire.RootDeviceHints{MinSizeBytes: 2, MaxSizeBytes: 1}, "root_device_hints.min_size_bytes"},
	} {
		if err := Validate(tt.h); err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("Validate(%s) = %v, want an error naming %s", String(tt.h), err, tt.field)
		}
	}
	if err := Validate(wire.RootDeviceHints{Name: "/dev/nvme0n1", ByPath: "/dev/disk/by-path/pci-0000:00:17.0-ata-1"}); err != nil {
		t.Errorf("valid hints refused: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	got := Describe(disks4(t)[0])
	want := "/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456, wwn eui.0025388b91c0ffee"
	if got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
}
