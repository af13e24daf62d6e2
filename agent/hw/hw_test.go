package hw

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

func fixture(name string) string {
	return filepath.Join("..", "..", "testdata", "agent", name)
}

func TestCollectFixtures(t *testing.T) {
	tests := []struct {
		name    string
		root    string
		want    wire.Hardware
		wantErr []string // substrings of the joined error; nil = no error
	}{
		{
			name: "two-socket server",
			root: fixture("server2s"),
			want: wire.Hardware{
				CPU:    wire.CPU{Model: "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz", Sockets: 2, Cores: 24, Threads: 48},
				Memory: wire.Memory{TotalBytes: 196483536 * 1024, TotalGB: 187},
				Disks: []wire.Disk{
					{Name: "nvme0n1", SizeBytes: 1875385008 * 512, Model: "SAMSUNG MZQLB960HAJR-00007", Serial: "S437NA0M812345",
						WWN: "eui.34333730528123450025384500000001", ByPath: "pci-0000:3b:00.0-nvme-1"},
					// no vpd_pg80 here: no serial, only the wwid; no ata_port dir: the port from "ataN"
					{Name: "sda", SizeBytes: 7814037168 * 512, Model: "ST4000NM0035-1V4", WWN: "naa.5000c500a1b2c3d0",
						ByPath: "pci-0000:00:17.0-ata-1.0", Rotational: true},
					{Name: "sdb", SizeBytes: 7814037168 * 512, Model: "ST4000NM0035-1V4", WWN: "naa.5000c500a1b2c3d1",
						ByPath: "pci-0000:00:17.0-ata-2.0", Rotational: true},
					{Name: "sdc", SizeBytes: 60062500 * 512, Model: "Cruzer Blade", Removable: true,
						ByPath: "pci-0000:00:14.0-usb-0:4:1.0-scsi-0:0:0:0"},
				},
				NICs: []wire.NIC{
					{Name: "eno1", MAC: "ac:1f:6b:4a:10:01", Driver: "ixgbe", SpeedMbps: 10000, Link: true},
					{Name: "eno2", MAC: "ac:1f:6b:4a:10:02", Driver: "ixgbe", SpeedMbps: 10000, Link: true},
					{Name: "eno3", MAC: "ac:1f:6b:4a:10:03", Driver: "igb", SpeedMbps: 1000, Link: true},
					{Name: "eno4", MAC: "ac:1f:6b:4a:10:04", Driver: "igb"},
				},
				DMI: wire.DMI{
					Vendor: "Supermicro", Product: "SYS-6029P-TR", Serial: "S329384X9123456",
					UUID: "00000000-0000-0000-0000-ac1f6b4a1001", BIOSVendor: "American Megatrends Inc.",
					BIOSVersion: "3.4", BIOSDate: "10/15/2020",
				},
				BootMode: "uefi",
				Hostname: "rack12-u07",
				Kernel:   "6.1.0-18-amd64",
			},
		},
		{
			name: "qemu vm",
			root: fixture("qemu-vm"),
			want: wire.Hardware{
				CPU:    wire.CPU{Model: "QEMU Virtual CPU version 2.5+", Sockets: 1, Cores: 1, Threads: 1},
				Memory: wire.Memory{TotalBytes: 492364 * 1024, TotalGB: 0},
				Disks: []wire.Disk{
					{Name: "vda", SizeBytes: 2 << 30, Serial: "lpmos-disk-0", ByPath: "pci-0000:00:05.0", Rotational: true},
				},
				NICs: []wire.NIC{
					{Name: "ens3", MAC: "52:54:00:aa:00:01", Driver: "virtio_net", Link: true},
				},
				DMI: wire.DMI{
					Vendor: "QEMU", Product: "Standard PC (i440FX + PIIX, 1996)",
					UUID: "6a1b1e59-7bd3-4c4d-9b0e-2f3a4f5b6c7d", BIOSVendor: "SeaBIOS",
					BIOSVersion: "1.16.2-debian-1.16.2-1", BIOSDate: "04/01/2014",
				},
				BootMode: "bios",
				Kernel:   "6.1.0-18-cloud-amd64",
			},
		},
		{
			// Each malformed entry empties only its own field.
			name: "malformed entries",
			root: fixture("broken"),
			want: wire.Hardware{
				CPU: wire.CPU{Model: "Intel(R) Celeron(R) CPU J1900 @ 1.99GHz", Sockets: 1, Cores: 2, Threads: 2},
				Disks: []wire.Disk{
					{Name: "sda"},
					{Name: "sdb", SizeBytes: 500118192 * 512, Rotational: true},
				},
				NICs: []wire.NIC{
					{Name: "enp1s0", MAC: "00:e0:4c:68:00:01", Link: true},
					{Name: "enp2s0", SpeedMbps: 1000, Link: true},
				},
				DMI:      wire.DMI{Vendor: "Shenzhen Mini PC"},
				BootMode: "bios",
			},
			wantErr: []string{
				`cpu: malformed cpuinfo: physical id "zero", cpu cores "four"`,
				`memory: MemTotal "lots kB"`,
				"disk sda: size:", "disk sdb: removable:",
				"nic enp1s0: speed:", "nic enp2s0: address:",
				"dmi product_name:",
			},
		},
		{
			name:    "missing tree",
			root:    fixture("does-not-exist"),
			want:    wire.Hardware{BootMode: "bios"},
			wantErr: []string{"cpu:", "memory:", "disks:", "nics:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Collect(tt.root)
			if got.CollectedAt.IsZero() || time.Since(got.CollectedAt) > time.Minute {
				t.Errorf("CollectedAt = %v, want now", got.CollectedAt)
			}
			got.CollectedAt = time.Time{}
			if !reflect.DeepEqual(got, tt.want) {
				gj, _ := json.MarshalIndent(got, "", "  ")
				wj, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Errorf("Collect(%s):\n got %s\nwant %s", tt.root, gj, wj)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Errorf("want errors %q, got none", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\n does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseCPUInfoFallbacks(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want wire.CPU
	}{
		{
			name: "arm64 without topology lines",
			in:   "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n\n",
			want: wire.CPU{Sockets: 1, Cores: 2, Threads: 2},
		},
		{
			name: "cpu cores without core id",
			in:   "processor : 0\nmodel name : X\ncpu cores : 1\n\nprocessor : 1\nmodel name : X\ncpu cores : 1\n",
			want: wire.CPU{Model: "X", Sockets: 1, Cores: 1, Threads: 2},
		},
		{name: "empty", in: "", want: wire.CPU{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUInfo([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSkipDisk(t *testing.T) {
	for name, want := range map[string]bool{
		"loop0": true, "ram15": true, "zram0": true, "dm-3": true, "sr0": true, "md127": true,
		"sda": false, "nvme0n1": false, "vda": false, "mmcblk0": false, "xvda": false,
	} {
		if got := SkipDisk(name); got != want {
			t.Errorf("SkipDisk(%q) = %v, want %v", name, got, want)
		}
	}
}

// The host's own tree must always give a usable report (it is what runs in
// the initramfs); only the fields the sandbox hides may be missing.
func TestCollectHost(t *testing.T) {
	got, _ := Collect("/")
	if got.CPU.Threads == 0 || got.Memory.TotalBytes == 0 {
		t.Errorf("host report lacks cpu or memory: %+v", got)
	}
}

// The four-disk fixture: every identity field the root-device hints use.
func TestDisksIdentity(t *testing.T) {
	got, err := Disks(fixture("disks4"))
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.Disk{
		{Name: "nvme0n1", SizeBytes: 937703088 * 512, Model: "SAMSUNG MZQLB480HAJQ-00007", Serial: "S4EMNX0R123456",
			WWN: "eui.0025388b91c0ffee", ByPath: "pci-0000:3b:00.0-nvme-1"},
		{Name: "sda", SizeBytes: 468862128 * 512, Model: "INTEL SSDSC2KB240G8", Vendor: "ATA", Serial: "PHYF912345AB240AGN",
			WWN: "naa.55cd2e415a1b2c3d", ByPath: "pci-0000:00:17.0-ata-1.0"},
		{Name: "sdb", SizeBytes: 7814037168 * 512, Model: "ST4000NM0035-1V4", Vendor: "ATA", Serial: "ZC1A2B3C",
			WWN: "naa.5000c500a1b2c3d4", ByPath: "pci-0000:00:17.0-ata-2.0", Rotational: true},
		{Name: "sdc", SizeBytes: 60062500 * 512, Model: "Cruzer Blade", Vendor: "SanDisk", Serial: "4C530001234567891234",
			ByPath: "pci-0000:00:14.0-usb-0:4:1.0-scsi-0:0:0:0", Removable: true},
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", "  ")
		wj, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("Disks(disks4):\n got %s\nwant %s", gj, wj)
	}
}

func TestVPDSerial(t *testing.T) {
	dir := t.TempDir()
	for name, tt := range map[string]struct {
		in   []byte
		want string
	}{
		"ok":           {in: append([]byte{0, 0x80, 0, 6}, "AB12  "...), want: "AB12"},
		"nul padded":   {in: append([]byte{0, 0x80, 0, 5}, "XY\x00\x00\x00"...), want: "XY"},
		"short length": {in: append([]byte{0, 0x80, 0, 2}, "ABCDEF"...), want: "AB"},
		"wrong page":   {in: append([]byte{0, 0x83, 0, 2}, "AB"...), want: ""},
		"truncated":    {in: []byte{0, 0x80}, want: ""},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), tt.in, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := vpdSerial(dir, name); got != tt.want {
			t.Errorf("%s: vpdSerial = %q, want %q", name, got, tt.want)
		}
	}
}
