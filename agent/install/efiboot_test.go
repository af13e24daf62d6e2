package install

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"github.com/lpmos/lpmos/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// tASCII16 spells an ASCII string as NUL-terminated UCS-2LE by hand (each
// byte followed by a zero byte): independent of the encoder's utf16 path.
func tASCII16(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString(hex.EncodeToString([]byte{s[i], 0}))
	}
	return b.String() + "0000"
}

func tHex(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(parts, ""), " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncodeLoadOption compares the encoder with a byte sequence assembled
// by hand from the UEFI 2.10 spec tables: EFI_LOAD_OPTION (3.1.3: UINT32
// Attributes, UINT16 FilePathListLength, CHAR16 Description[], device
// path), the Hard Drive Media Device Path (10.3.5.1: type 4 subtype 1
// length 42, UINT32 PartitionNumber, UINT64 PartitionStart, UINT64
// PartitionSize, 16-byte signature, MBRType 2 = GPT, SignatureType 2 =
// GUID), the File Path Media Device Path (10.3.5.4: type 4 subtype 4,
// length 4 + path) and End Entire (type 0x7f subtype 0xff length 4). It is
// the entry `efibootmgr -c -d /dev/vda -p 15 -L "lpmos: debian 12" -l
// \EFI\lpmos\grubx64.efi` creates (efibootmgr writes the short-form HD()
// path too), for the ESP of e2e/osimage.sh's layout.
func TestEncodeLoadOption(t *testing.T) {
	p := espPartition{Number: 15, StartLBA: 4096, Sectors: 16384, SectorSz: 512}
	copy(p.GUID[:], tGUID("735911D6-9D71-6244-BD93-51D2F0E7D7E4"))
	got := encodeLoadOption("lpmos: debian 12", p, `\EFI\lpmos\grubx64.efi`)
	want := tHex(t,
		"01000000", // LOAD_OPTION_ACTIVE
		"6000",     // FilePathListLength = 42 + (4 + 2*23) + 4 = 96
		tASCII16("lpmos: debian 12"),
		"0401 2a00",                            // HD, length 42
		"0f000000",                             // partition 15
		"0010000000000000", "0040000000000000", // start LBA 4096, 16384 sectors
		"d6115973 719d 4462 bd93 51d2f0e7d7e4", // GUID, first three fields little endian
		"02 02",                                // GPT, GUID signature
		"0404 3200",                            // File path, length 4 + 46
		tASCII16(`\EFI\lpmos\grubx64.efi`),
		"7fff 0400", // End
	)
	if !bytes.Equal(got, want) {
		t.Fatalf("load option\n got %x\nwant %x", got, want)
	}
	o, err := parseLoadOption(got)
	if err != nil {
		t.Fatal(err)
	}
	if o.Description != "lpmos: debian 12" || !o.HasHD || o.HDGUID != p.GUID || o.Network {
		t.Fatalf("parsed back %+v", o)
	}
	if g := formatGUID(p.GUID[:]); g != "735911D6-9D71-6244-BD93-51D2F0E7D7E4" {
		t.Fatalf("formatGUID = %s", g)
	}
}

// tNetOption is a network boot option as OVMF creates it for a virtio NIC:
// PciRoot(0)/Pci(3,0)/MAC(525400e20003,1), description "UEFI PXEv4".
func tNetOption(t *testing.T) []byte {
	return tHex(t, "01000000", "3b00", tASCII16("UEFI PXEv4"), // 12 + 6 + 37 + 4 path bytes
		"02010c00 d041030a 00000000",                            // ACPI PciRoot(0)
		"01010600 0003",                                         // Pci(0x3,0x0)
		"030b2500 525400e20003", strings.Repeat("00", 26), "01", // MAC, if type 1
		"7fff0400")
}

func TestParseLoadOption(t *testing.T) {
	o, err := parseLoadOption(tNetOption(t))
	if err != nil {
		t.Fatal(err)
	}
	if !o.Network || o.HasHD || o.Description != "UEFI PXEv4" {
		t.Fatalf("network option parsed as %+v", o)
	}
	for _, bad := range [][]byte{
		{1, 0},
		tHex(t, "01000000", "0400", "4100"), // description not terminated
		tHex(t, "01000000", "4000", tASCII16("x"), "7fff0400"),          // path longer than the option
		tHex(t, "01000000", "0800", tASCII16("x"), "04010200 7fff0400"), // node length 2
	} {
		if _, err := parseLoadOption(bad); err == nil {
			t.Errorf("parseLoadOption(%x) accepted", bad)
		}
	}
}

func TestArrangeBootOrder(t *testing.T) {
	net := func(ns ...uint16) func(uint16) bool {
		return func(n uint16) bool { return slices.Contains(ns, n) }
	}
	for _, tc := range []struct {
		name    string
		order   []uint16
		current int
		isNet   func(uint16) bool
		added   uint16
		removed []uint16
		want    []uint16
	}{
		{"booted from the NIC: it stays first, the new entry second",
			[]uint16{1, 0, 2, 3}, 1, net(1), 4, nil, []uint16{1, 4, 0, 2, 3}},
		{"current not first in the old order",
			[]uint16{0, 2, 1}, 1, net(1), 3, nil, []uint16{1, 3, 0, 2}},
		{"stale lpmos entries removed",
			[]uint16{1, 5, 0, 6}, 1, net(1), 4, []uint16{5, 6}, []uint16{1, 4, 0}},
		{"reused number of a stale entry is not duplicated",
			[]uint16{1, 5, 0}, 1, net(1), 5, nil, []uint16{1, 5, 0}},
		{"no BootCurrent: the first network option",
			[]uint16{0, 2, 1}, -1, net(2, 1), 3, nil, []uint16{2, 3, 0, 1}},
		{"no BootCurrent, no network option: new entry first",
			[]uint16{0, 1}, -1, net(), 2, nil, []uint16{2, 0, 1}},
		{"empty BootOrder",
			nil, 7, net(7), 0, nil, []uint16{7, 0}},
		{"BootCurrent missing from BootOrder still goes first",
			[]uint16{0, 2}, 1, net(1), 3, nil, []uint16{1, 3, 0, 2}},
		{"duplicates in the old order collapse",
			[]uint16{1, 0, 0, 1}, 1, net(1), 2, nil, []uint16{1, 2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rm := map[uint16]bool{}
			for _, n := range tc.removed {
				rm[n] = true
			}
			got := arrangeBootOrder(tc.order, tc.current, tc.isNet, tc.added, rm)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %04X, want %04X", got, tc.want)
			}
		})
	}
}

// tTree creates files (relative slash paths -> content) under a temp dir.
func tTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFindLoader(t *testing.T) {
	for _, tc := range []struct {
		name      string
		files     map[string]string
		arch      string
		want      string // EFI path; "" = error
		shim      bool
		removable bool
		errHas    []string
	}{
		{"shim before grub", map[string]string{"EFI/debian/shimx64.efi": "s", "EFI/debian/grubx64.efi": "g", "EFI/BOOT/BOOTX64.EFI": "b"},
			"x64", `\EFI\debian\shimx64.efi`, true, false, nil},
		{"grub", map[string]string{"EFI/lpmos/grubx64.efi": "g"}, "x64", `\EFI\lpmos\grubx64.efi`, false, false, nil},
		{"shim in any distro dir before grub in another", map[string]string{"EFI/a/grubx64.efi": "g", "EFI/b/shimx64.efi": "s"},
			"x64", `\EFI\b\shimx64.efi`, true, false, nil},
		{"systemd-boot", map[string]string{"EFI/systemd/systemd-bootx64.efi": "sd", "EFI/Linux/x.txt": ""},
			"x64", `\EFI\systemd\systemd-bootx64.efi`, false, false, nil},
		{"case-insensitive names keep their case", map[string]string{"efi/Fedora/SHIMX64.EFI": "s"},
			"x64", `\efi\Fedora\SHIMX64.EFI`, true, false, nil},
		{"removable path only", map[string]string{"EFI/BOOT/BOOTX64.EFI": "b"}, "x64", `\EFI\BOOT\BOOTX64.EFI`, false, true, nil},
		{"arm64", map[string]string{"EFI/debian/grubaa64.efi": "g", "EFI/debian/grubx64.efi": "x"}, "aa64", `\EFI\debian\grubaa64.efi`, false, false, nil},
		{"arm64 removable", map[string]string{"EFI/BOOT/BOOTAA64.EFI": "b", "EFI/BOOT/BOOTX64.EFI": "x"}, "aa64", `\EFI\BOOT\BOOTAA64.EFI`, false, true, nil},
		{"an x64 loader does not boot arm64", map[string]string{"EFI/debian/grubx64.efi": "x"}, "aa64", "", false, false,
			[]string{`\EFI\debian\shimaa64.efi`, `\EFI\debian\grubaa64.efi`, `\EFI\BOOT\BOOTAA64.EFI`}},
		{"empty ESP", map[string]string{"readme.txt": ""}, "x64", "", false, false,
			[]string{`\EFI\<distro>\{shimx64.efi,grubx64.efi,systemd-bootx64.efi}`, `\EFI\BOOT\BOOTX64.EFI`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := findLoader(tTree(t, tc.files), tc.arch)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("found %+v, want an error", l)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %s", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.efiPath() != tc.want || l.Shim != tc.shim || l.Removable != tc.removable {
				t.Fatalf("got %+v (%s), want %s shim=%v removable=%v", l, l.efiPath(), tc.want, tc.shim, tc.removable)
			}
		})
	}
}

func TestInstallFallback(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		arch    string
		want    map[string]string // files that must exist afterwards (relative path -> content)
		written int
	}{
		{"grub only: copied as BOOTX64.EFI", map[string]string{"EFI/lpmos/grubx64.efi": "GRUB"}, "x64",
			map[string]string{"EFI/BOOT/BOOTX64.EFI": "GRUB", "EFI/lpmos/grubx64.efi": "GRUB"}, 1},
		{"shim: shim as BOOTX64.EFI, grub and MokManager next to it",
			map[string]string{"EFI/debian/shimx64.efi": "SHIM", "EFI/debian/grubx64.efi": "GRUB", "EFI/debian/mmx64.efi": "MM", "EFI/debian/fbx64.efi": "FB"}, "x64",
			map[string]string{"EFI/BOOT/BOOTX64.EFI": "SHIM", "EFI/BOOT/grubx64.efi": "GRUB", "EFI/BOOT/mmx64.efi": "MM"}, 3},
		{"an existing removable loader is kept", map[string]string{"EFI/debian/grubx64.efi": "GRUB", "EFI/boot/bootx64.efi": "OLD"}, "x64",
			map[string]string{"EFI/boot/bootx64.efi": "OLD"}, 0},
		{"arm64", map[string]string{"EFI/debian/grubaa64.efi": "GRUB"}, "aa64",
			map[string]string{"EFI/BOOT/BOOTAA64.EFI": "GRUB"}, 1},
		{"removable loader: nothing to do", map[string]string{"EFI/BOOT/BOOTX64.EFI": "B"}, "x64",
			map[string]string{"EFI/BOOT/BOOTX64.EFI": "B"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tTree(t, tc.files)
			l, err := findLoader(root, tc.arch)
			if err != nil {
				t.Fatal(err)
			}
			done, err := installFallback(root, l, tc.arch)
			if err != nil {
				t.Fatal(err)
			}
			if len(done) != tc.written {
				t.Errorf("wrote %v, want %d files", done, tc.written)
			}
			for p, c := range tc.want {
				if got := readFile(t, filepath.Join(root, p)); string(got) != c {
					t.Errorf("%s = %q, want %q", p, got, c)
				}
			}
			if tc.name == "shim: shim as BOOTX64.EFI, grub and MokManager next to it" {
				if _, err := os.Stat(filepath.Join(root, "EFI/BOOT/fbx64.efi")); err == nil {
					t.Error("fallback.efi copied: shim would run it and rewrite the boot entries")
				}
			}
		})
	}
}

// tVar writes a fake efivarfs file: 4 attribute bytes + data.
func tVar(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	b := append([]byte{7, 0, 0, 0}, data...)
	if err := os.WriteFile(filepath.Join(dir, name+"-"+efiGlobalGUID), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterBootEntry(t *testing.T) {
	esp := espPartition{Number: 15, StartLBA: 4096, Sectors: 16384, SectorSz: 512}
	copy(esp.GUID[:], tGUID("735911D6-9D71-6244-BD93-51D2F0E7D7E4"))
	other := esp
	copy(other.GUID[:], tGUID("00000000-1111-2222-3333-444444444444"))

	dir := t.TempDir()
	tVar(t, dir, "Boot0000", tNetOption(t))
	tVar(t, dir, "Boot0001", encodeLoadOption("UEFI Misc Device", esp, `\EFI\BOOT\BOOTX64.EFI`))
	// an lpmos entry of an earlier install of the same image: replaced
	tVar(t, dir, "Boot0003", encodeLoadOption("lpmos: debian 11 with a much longer description", esp, `\EFI\old\grubx64.efi`))
	tVar(t, dir, "Boot0005", encodeLoadOption("lpmos: debian 12", esp, `\EFI\old\grubx64.efi`))
	// an lpmos entry for another disk's ESP: kept
	tVar(t, dir, "Boot0004", encodeLoadOption("lpmos: ubuntu 24.04", other, `\EFI\ubuntu\shimx64.efi`))
	tVar(t, dir, "BootCurrent", []byte{0, 0})
	tVar(t, dir, "BootOrder", encodeU16s([]uint16{1, 3, 0, 4, 5}))
	// not a global variable: ignored
	if err := os.WriteFile(filepath.Join(dir, "Boot0002-00000000-0000-0000-0000-000000000000"), []byte{7, 0, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}

	v := efiVars{dir: dir}
	num, order, err := registerBootEntry(v, "lpmos: debian 12", esp, `\EFI\lpmos\grubx64.efi`)
	if err != nil {
		t.Fatal(err)
	}
	if num != 3 {
		t.Errorf("entry Boot%04X, want Boot0003 (the lowest stale lpmos number)", num)
	}
	wantOrder := []uint16{0, 3, 1, 4}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Errorf("BootOrder %04X, want %04X", order, wantOrder)
	}
	raw := readFile(t, filepath.Join(dir, "BootOrder-"+efiGlobalGUID))
	if !bytes.Equal(raw, append([]byte{7, 0, 0, 0}, encodeU16s(wantOrder)...)) {
		t.Errorf("BootOrder file %x", raw)
	}
	raw = readFile(t, filepath.Join(dir, "Boot0003-"+efiGlobalGUID))
	want := append([]byte{7, 0, 0, 0}, encodeLoadOption("lpmos: debian 12", esp, `\EFI\lpmos\grubx64.efi`)...)
	if !bytes.Equal(raw, want) {
		t.Errorf("Boot0003 file (rewritten over a longer entry)\n got %x\nwant %x", raw, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "Boot0005-"+efiGlobalGUID)); !os.IsNotExist(err) {
		t.Errorf("stale Boot0005 still there: %v", err)
	}
	for _, keep := range []string{"Boot0000", "Boot0001", "Boot0004"} {
		if _, err := os.Stat(filepath.Join(dir, keep+"-"+efiGlobalGUID)); err != nil {
			t.Errorf("%s: %v", keep, err)
		}
	}

	// a machine with no BootOrder, no BootCurrent, no entries at all
	empty := efiVars{dir: t.TempDir()}
	num, order, err = registerBootEntry(empty, "lpmos: x", esp, `\EFI\BOOT\BOOTX64.EFI`)
	if err != nil || num != 0 || !reflect.DeepEqual(order, []uint16{0}) {
		t.Fatalf("empty NVRAM: Boot%04X order %v err %v", num, order, err)
	}
	b, err := empty.get("BootOrder")
	if err != nil || binary.LittleEndian.Uint16(b) != 0 || len(b) != 2 {
		t.Fatalf("BootOrder %x %v", b, err)
	}
}

func TestFindESP(t *testing.T) {
	testenv.RequireTool(t, "sfdisk", "fdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	// e2e/osimage.sh's layout: root p1, BIOS boot p14, ESP p15
	layout := "label: gpt\n" +
		img + "1 : start=20480, size=110558, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n" +
		img + "14 : start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n" +
		img + "15 : start=4096, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=735911D6-9D71-6244-BD93-51D2F0E7D7E4\n"
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader(layout)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := findESP(f)
	if err != nil {
		t.Fatal(err)
	}
	if p.Number != 15 || p.StartLBA != 4096 || p.Sectors != 16384 || formatGUID(p.GUID[:]) != "735911D6-9D71-6244-BD93-51D2F0E7D7E4" {
		t.Fatalf("ESP %+v (%s)", p, formatGUID(p.GUID[:]))
	}
	if off, n := p.byteRange(); off != 4096*512 || n != 16384*512 {
		t.Fatalf("byte range %d+%d", off, n)
	}
	parts, err := readPartitionTable(f)
	if err != nil || len(parts) == 0 || parts[0].Number != 1 {
		t.Fatalf("partition table %+v %v", parts, err)
	}

	// no ESP: a BIOS-only image
	noESP := tMakeGPTImage(t, make([]byte, 4096), "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 4096)
	if _, err := findESP(bytes.NewReader(noESP)); err != errNoESP {
		t.Fatalf("image without ESP: %v", err)
	}
	if _, err := findESP(bytes.NewReader(make([]byte, 8192))); err != errNoESP {
		t.Fatalf("no GPT: %v", err)
	}
}

// TestEfiVarsImmutable: efivarfs marks existing variables immutable
// (chattr +i); rewriting and deleting one must clear the flag first. The
// temp dir's file system (ext4 here) has the same flag.
func TestEfiVarsImmutable(t *testing.T) {
	testenv.RequireRoot(t, "the immutable flag (FS_IOC_SETFLAGS)")
	dir := t.TempDir()
	tVar(t, dir, "BootOrder", encodeU16s([]uint16{1, 2, 3}))
	tVar(t, dir, "Boot0009", []byte{1, 2, 3})
	for _, name := range []string{"BootOrder", "Boot0009"} {
		f, err := os.Open(filepath.Join(dir, name+"-"+efiGlobalGUID))
		if err != nil {
			t.Fatal(err)
		}
		flags := fsImmutableFL
		err = ioctlPtr(f.Fd(), ioctlFSSetFlags, unsafe.Pointer(&flags))
		f.Close()
		if err != nil {
			t.Fatalf("the temp dir's file system cannot set the immutable flag (run as root on ext4): %v", err)
		}
	}
	t.Cleanup(func() { _ = clearImmutable(filepath.Join(dir, "BootOrder-"+efiGlobalGUID)) })
	if err := os.WriteFile(filepath.Join(dir, "BootOrder-"+efiGlobalGUID), []byte{0}, 0o644); err == nil {
		t.Fatal("immutable file was writable: the test proves nothing")
	}
	v := efiVars{dir: dir}
	if err := v.set("BootOrder", encodeU16s([]uint16{4})); err != nil {
		t.Fatal(err)
	}
	if b, err := v.get("BootOrder"); err != nil || !bytes.Equal(b, []byte{4, 0}) {
		t.Fatalf("BootOrder %x %v", b, err)
	}
	if err := v.del("Boot0009"); err != nil {
		t.Fatal(err)
	}
	if err := v.del("Boot0009"); err != nil {
		t.Fatalf("deleting a missing variable: %v", err)
	}
}
