package pxe

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

func TestEmbeddedIPXE(t *testing.T) {
	files := IPXEFiles()
	names := IPXEBinaries()
	for _, want := range []string{FileBIOS, FileUEFI, FileUEFISNP} {
		if !slices.Contains(names, want) {
			t.Fatalf("embedded binaries %v lack %s (run go generate ./pxe)", names, want)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			b, err := fs.ReadFile(files, name)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case strings.HasSuffix(name, ".kpxe"):
				// undionly.kpxe is a PXE NBP: a real-mode image loaded at
				// 0000:7c00 that starts with iPXE's pxeprefix far jump to
				// 07c0:xxxx, looks for the firmware's "PXENV+" and "!PXE"
				// structures, and carries the (compressed) rest, about 70 KB.
				if len(b) < 50_000 {
					t.Fatalf("%s is %d bytes, want > 50 KB", name, len(b))
				}
				if b[0] != 0xea || b[3] != 0xc0 || b[4] != 0x07 {
					t.Fatalf("%s starts with % x, want the far jump ea xx xx c0 07", name, b[:5])
				}
				for _, sig := range []string{"PXENV+", "!PXE", "UNDI"} {
					if !bytes.Contains(b, []byte(sig)) {
						t.Fatalf("%s lacks the PXE signature %q", name, sig)
					}
				}
			case strings.HasSuffix(name, ".efi"):
				// A PE/COFF image: "MZ", e_lfanew at 0x3c -> "PE\0\0".
				if len(b) < 0x40 || string(b[:2]) != "MZ" {
					t.Fatalf("%s does not start with MZ", name)
				}
				off := binary.LittleEndian.Uint32(b[0x3c:])
				if int(off)+4 > len(b) || string(b[off:off+4]) != "PE\x00\x00" {
					t.Fatalf("%s has no PE header at %#x", name, off)
				}
				machine := binary.LittleEndian.Uint16(b[off+4:])
				wantMachine := uint16(0x8664) // x86-64
				if name == FileUEFIARM64 {
					wantMachine = 0xaa64
				}
				if machine != wantMachine {
					t.Fatalf("%s PE machine %#x, want %#x", name, machine, wantMachine)
				}
			}
		})
	}
	lic, err := fs.ReadFile(files, licenseFile)
	if err != nil || !bytes.Contains(lic, []byte("GPL")) {
		t.Fatalf("COPYING.ipxe missing or without the GPL notice: %v", err)
	}
	ver, err := fs.ReadFile(files, versionFile)
	if err != nil || !bytes.Contains(ver, []byte("ipxe 1.")) {
		t.Fatalf("VERSION missing or without the package version: %q %v", ver, err)
	}
	for _, name := range names {
		if !bytes.Contains(ver, []byte(name)) {
			t.Errorf("VERSION lists no checksum for %s", name)
		}
	}
}
