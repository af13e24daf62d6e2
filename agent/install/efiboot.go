package install

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf16"
)

// UEFI boot entries (UEFI spec 2.10: 3.1.3 Load Options, 3.3 Globally
// Defined Variables, 10.3 Device Path Protocol).

// efiGlobalGUID is EFI_GLOBAL_VARIABLE, the vendor GUID of Boot####,
// BootOrder and BootCurrent; efivarfs names a variable <Name>-<GUID>.
const efiGlobalGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// Variable attributes: NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS,
// what every boot variable carries.
const efiVarAttrNVBSRT = 0x7

// loadOptionActive is LOAD_OPTION_ACTIVE.
const loadOptionActive = 0x1

// Device path node types and subtypes.
const (
	dpTypeMessaging  = 0x03
	dpSubMAC         = 0x0b // MAC address node: a network boot option
	dpTypeMedia      = 0x04
	dpSubHardDrive   = 0x01
	dpSubFilePath    = 0x04
	dpTypeEnd        = 0x7f
	dpSubEndEntire   = 0xff
	hdNodeLen        = 42
	hdMBRTypeGPT     = 0x02
	hdSignatureGUID  = 0x02
	lpmosDescription = "lpmos: " // prefix of the entries the agent creates
)

// espTypeGUID is the GPT type of an EFI system partition.
const espTypeGUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

// espPartition is what a boot entry's HD() node needs from the GPT.
type espPartition struct {
	Number   uint32   // 1-based, as in the GPT array
	StartLBA uint64   // first sector
	Sectors  uint64   // size in sectors
	GUID     [16]byte // unique partition GUID, on-disk (mixed-endian) form
	SectorSz int64
}

func (p espPartition) byteRange() (int64, int64) {
	return int64(p.StartLBA) * p.SectorSz, int64(p.Sectors) * p.SectorSz
}

// errNoESP means the partition table has no EFI system partition.
const errNoESP = constError("no EFI system partition")

// findESP returns the first EFI system partition of the GPT.
func findESP(r io.ReaderAt) (espPartition, error) {
	g, err := readGPT(r)
	if errors.Is(err, errNoGPT) {
		return espPartition{}, errNoESP
	}
	if err != nil {
		return espPartition{}, err
	}
	want := mustGUID(espTypeGUID)
	esz := int(g.u32(gptOffEntrySize))
	for i := 0; (i+1)*esz <= len(g.entries); i++ {
		e := g.entries[i*esz : (i+1)*esz]
		if !bytes.Equal(e[:16], want[:]) {
			continue
		}
		first, last := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		if last < first {
			continue
		}
		p := espPartition{Number: uint32(i + 1), StartLBA: first, Sectors: last - first + 1, SectorSz: g.sectorSize}
		copy(p.GUID[:], e[16:32])
		return p, nil
	}
	return espPartition{}, errNoESP
}

// ucs2 encodes s as NUL-terminated UCS-2 little endian.
func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// encodeLoadOption builds an EFI_LOAD_OPTION: Attributes (u32),
// FilePathListLength (u16), Description (UCS-2, NUL), then the device path
// HD(part, GPT, guid, start, size)/File(loader)/End. loader is the path on
// the ESP with backslashes (\EFI\debian\shimx64.efi).
func encodeLoadOption(desc string, p espPartition, loader string) []byte {
	var dp bytes.Buffer
	hd := make([]byte, hdNodeLen)
	hd[0], hd[1] = dpTypeMedia, dpSubHardDrive
	binary.LittleEndian.PutUint16(hd[2:], hdNodeLen)
	binary.LittleEndian.PutUint32(hd[4:], p.Number)
	binary.LittleEndian.PutUint64(hd[8:], p.StartLBA)
	binary.LittleEndian.PutUint64(hd[16:], p.Sectors)
	copy(hd[24:40], p.GUID[:])
	hd[40], hd[41] = hdMBRTypeGPT, hdSignatureGUID
	dp.Write(hd)
	name := ucs2(loader)
	dp.Write([]byte{dpTypeMedia, dpSubFilePath})
	_ = binary.Write(&dp, binary.LittleEndian, uint16(4+len(name)))
	dp.Write(name)
	dp.Write([]byte{dpTypeEnd, dpSubEndEntire, 4, 0})

	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, uint32(loadOptionActive))
	_ = binary.Write(&b, binary.LittleEndian, uint16(dp.Len()))
	b.Write(ucs2(desc))
	b.Write(dp.Bytes())
	return b.Bytes()
}

// loadOption is the part of a parsed EFI_LOAD_OPTION the agent looks at.
type loadOption struct {
	Description string
	HDGUID      [16]byte // signature of the first HD() node, if any
	HasHD       bool
	Network     bool // the device path has a MAC node
}

// parseLoadOption reads an EFI_LOAD_OPTION (without the efivarfs
// attribute prefix).
func parseLoadOption(b []byte) (loadOption, error) {
	var o loadOption
	if len(b) < 6 {
		return o, errors.New("load option shorter than 6 bytes")
	}
	dplen := int(binary.LittleEndian.Uint16(b[4:]))
	i := 6
	var desc []uint16
	for ; ; i += 2 {
		if i+1 >= len(b) {
			return o, errors.New("load option description not terminated")
		}
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			i += 2
			break
		}
		desc = append(desc, c)
	}
	o.Description = string(utf16.Decode(desc))
	if i+dplen > len(b) {
		return o, fmt.Errorf("load option device path of %d bytes overruns the option", dplen)
	}
	dp := b[i : i+dplen]
	for len(dp) >= 4 {
		typ, sub, n := dp[0], dp[1], int(binary.LittleEndian.Uint16(dp[2:]))
		if n < 4 || n > len(dp) {
			return o, fmt.Errorf("device path node of length %d", n)
		}
		switch {
		case typ == dpTypeEnd:
			return o, nil
		case typ == dpTypeMessaging && sub == dpSubMAC:
			o.Network = true
		case typ == dpTypeMedia && sub == dpSubHardDrive && n == hdNodeLen && !o.HasHD:
			copy(o.HDGUID[:], dp[24:40])
			o.HasHD = true
		}
		dp = dp[n:]
	}
	return o, nil
}

// arrangeBootOrder puts first the option the machine booted from (the
// network boot that brought the agent: the next boot must still ask lpmos),
// the new entry right after it, then the rest in their old order, without
// the removed entries. With no usable BootCurrent, the first network option
// of the old order takes its place; with none either, the new entry goes
// first.
func arrangeBootOrder(order []uint16, current int, isNet func(uint16) bool, added uint16, removed map[uint16]bool) []uint16 {
	first := -1
	if current >= 0 && current != int(added) && !removed[uint16(current)] {
		first = current
	} else {
		for _, n := range order {
			if n != added && !removed[n] && isNet(n) {
				first = int(n)
				break
			}
		}
	}
	out := make([]uint16, 0, len(order)+2)
	if first >= 0 {
		out = append(out, uint16(first))
	}
	out = append(out, added)
	for _, n := range order {
		if int(n) == first || n == added || removed[n] || contains(out, n) {
			continue
		}
		out = append(out, n)
	}
	return out
}

func contains(s []uint16, v uint16) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// efiArch is the suffix UEFI uses for this architecture's binaries.
func efiArch(goarch string) string {
	if goarch == "arm64" {
		return "aa64"
	}
	return "x64"
}

// loaderCandidates lists, in order of preference, what findLoader looks
// for: shim, grub and systemd-boot in each distro directory under \EFI
// (sorted), then the removable-media path.
func loaderCandidates(arch string) []string {
	return []string{"shim" + arch + ".efi", "grub" + arch + ".efi", "systemd-boot" + arch + ".efi"}
}

// lookupFold finds name in dir ignoring case (FAT is case-insensitive; an
// image built elsewhere may say EFI/Debian or efi/debian). It returns the
// real name.
func lookupFold(dir, name string) (string, bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", false
	}
	for _, e := range ents {
		if strings.EqualFold(e.Name(), name) {
			return e.Name(), true
		}
	}
	return "", false
}

// efiLoader is a boot loader found on the ESP.
type efiLoader struct {
	Rel       string // path relative to the ESP root, real case, '/' separated
	Removable bool   // it is \EFI\BOOT\BOOT<ARCH>.EFI itself
	Shim      bool
}

// efiPath turns a relative slash path into the ESP's backslash form.
func (l efiLoader) efiPath() string { return `\` + strings.ReplaceAll(l.Rel, "/", `\`) }

// findLoader searches the mounted ESP at root. It returns the searched
// paths in the error when nothing is found.
func findLoader(root, arch string) (efiLoader, error) {
	var searched []string
	efiDir, ok := lookupFold(root, "EFI")
	var distros []string
	if ok {
		ents, _ := os.ReadDir(filepath.Join(root, efiDir))
		for _, e := range ents {
			if e.IsDir() && !strings.EqualFold(e.Name(), "BOOT") {
				distros = append(distros, e.Name())
			}
		}
		sort.Strings(distros)
	} else {
		efiDir = "EFI"
	}
	for _, cand := range loaderCandidates(arch) {
		for _, d := range distros {
			searched = append(searched, `\EFI\`+d+`\`+cand)
			if name, ok := lookupFold(filepath.Join(root, efiDir, d), cand); ok {
				return efiLoader{Rel: path.Join(efiDir, d, name), Shim: strings.HasPrefix(cand, "shim")}, nil
			}
		}
	}
	if len(distros) == 0 {
		searched = append(searched, `\EFI\<distro>\{`+strings.Join(loaderCandidates(arch), ",")+`}`)
	}
	removable := "BOOT" + strings.ToUpper(arch) + ".EFI"
	searched = append(searched, `\EFI\BOOT\`+removable)
	if bootDir, ok := lookupFold(filepath.Join(root, efiDir), "BOOT"); ok {
		if name, ok := lookupFold(filepath.Join(root, efiDir, bootDir), removable); ok {
			return efiLoader{Rel: path.Join(efiDir, bootDir, name), Removable: true}, nil
		}
	}
	return efiLoader{}, fmt.Errorf("no UEFI boot loader on the EFI system partition (searched %s)", strings.Join(searched, ", "))
}

// installFallback copies the loader to the removable-media path
// \EFI\BOOT\BOOT<ARCH>.EFI when that does not exist yet, so firmware that
// loses or ignores NVRAM entries still boots the disk. For shim, the
// second stages it loads from its own directory (grub, MokManager) are
// copied next to it. It returns the files written, relative to root.
func installFallback(root string, l efiLoader, arch string) ([]string, error) {
	if l.Removable {
		return nil, nil
	}
	efiDir := strings.SplitN(l.Rel, "/", 2)[0]
	bootDir, ok := lookupFold(filepath.Join(root, efiDir), "BOOT")
	if !ok {
		bootDir = "BOOT"
		if err := os.Mkdir(filepath.Join(root, efiDir, bootDir), 0o755); err != nil {
			return nil, fmt.Errorf("ESP fallback: %w", err)
		}
	}
	removable := "BOOT" + strings.ToUpper(arch) + ".EFI"
	if _, ok := lookupFold(filepath.Join(root, efiDir, bootDir), removable); ok {
		return nil, nil
	}
	copies := [][2]string{{l.Rel, path.Join(efiDir, bootDir, removable)}}
	if l.Shim {
		src := path.Dir(l.Rel)
		for _, second := range []string{"grub" + arch + ".efi", "mm" + arch + ".efi"} {
			if name, ok := lookupFold(filepath.Join(root, src), second); ok {
				copies = append(copies, [2]string{path.Join(src, name), path.Join(efiDir, bootDir, second)})
			}
		}
	}
	var done []string
	for _, c := range copies {
		if err := copyFile(filepath.Join(root, c[0]), filepath.Join(root, c[1])); err != nil {
			return done, fmt.Errorf("ESP fallback: %w", err)
		}
		done = append(done, c[1])
	}
	return done, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("syncing %s: %w", dst, err)
	}
	return out.Close()
}
