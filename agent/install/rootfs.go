package install

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf16"

	"github.com/lpmos/lpmos/agent/wire"
)

// GPT partition type GUIDs lpmos knows by name (UAPI Discoverable
// Partitions Specification, UEFI spec).
const (
	guidRootX86_64  = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
	guidRootARM64   = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
	guidLinuxData   = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	guidESP         = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	guidBIOSBoot    = "21686148-6449-6E6F-744E-656564454649"
	guidLinuxSwap   = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
	guidLinuxLVM    = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
	guidXBootLDR    = "BC13C2FF-59E6-4262-A352-B275FD42A172"
	guidMSBasicData = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
)

// Partition roles recorded in wire.Partition.Role.
const (
	roleRoot     = "root"
	roleBoot     = "boot"
	roleESP      = "esp"
	roleBIOSBoot = "bios_boot"
	roleSwap     = "swap"
	roleLVM      = "lvm"
)

// typeName is a short human name for a partition type, for reasons.
func typeName(typ string) string {
	switch typ {
	case guidRootX86_64:
		return "Linux root (x86-64)"
	case guidRootARM64:
		return "Linux root (arm64)"
	case guidLinuxData:
		return "Linux filesystem"
	case guidESP:
		return "EFI System"
	case guidBIOSBoot:
		return "BIOS boot"
	case guidLinuxSwap:
		return "Linux swap"
	case guidLinuxLVM:
		return "Linux LVM"
	case guidXBootLDR:
		return "Linux extended boot"
	case guidMSBasicData:
		return "Microsoft basic data"
	case "0x83":
		return "Linux (MBR 0x83)"
	case "0x8e":
		return "Linux LVM (MBR 0x8e)"
	case "0x82":
		return "Linux swap (MBR 0x82)"
	case "0xef":
		return "EFI System (MBR 0xef)"
	}
	return typ
}

// formatGUID is parseGUID's inverse: on-disk bytes to upper-case text.
func formatGUID(g []byte) string {
	b := []byte{g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6]}
	b = append(b, g[8:16]...)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// readPartitionTable lists the partitions of the GPT or, for MBR-only
// images, of the four primary MBR entries. A disk with neither yields no
// partitions and no error.
func readPartitionTable(r io.ReaderAt) ([]wire.Partition, error) {
	g, err := readGPT(r)
	switch {
	case err == nil:
		var parts []wire.Partition
		esz := int(g.u32(gptOffEntrySize))
		for i := 0; (i+1)*esz <= len(g.entries); i++ {
			e := g.entries[i*esz : (i+1)*esz]
			if bytes.Equal(e[:16], make([]byte, 16)) {
				continue
			}
			first, last := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
			if last < first {
				continue
			}
			parts = append(parts, wire.Partition{
				Number: i + 1, Name: gptName(e[56:min(esz, 128)]), Type: formatGUID(e[:16]),
				StartBytes: int64(first) * g.sectorSize, SizeBytes: int64(last-first+1) * g.sectorSize,
			})
		}
		return parts, nil
	case !errors.Is(err, errNoGPT):
		return nil, err
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("reading MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil, nil
	}
	var parts []wire.Partition
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		start, n := binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
		if e[4] == 0 || n == 0 {
			continue
		}
		parts = append(parts, wire.Partition{Number: i + 1, Type: fmt.Sprintf("0x%02x", e[4]),
			StartBytes: int64(start) * 512, SizeBytes: int64(n) * 512})
	}
	return parts, nil
}

// gptName decodes a GPT entry's UTF-16LE name.
func gptName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// sniffLen covers every signature sniffFS looks at (btrfs: 64 KiB + 0x48).
const sniffLen = 0x10000 + 0x48

// sniffFS names the file system (or volume format) at the start of a
// partition by its superblock magic; "" when none is recognised.
func sniffFS(b []byte) string {
	has := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	for s := 0; s < 4; s++ { // LVM2 label: any of the first four sectors
		if has(s*512, "LABELONE") && has(s*512+24, "LVM2 001") {
			return "lvm2"
		}
	}
	switch {
	case has(1080, "\x53\xef"):
		return "ext4" // ext2/3/4 share the magic; the ext4 driver mounts all three
	case has(0, "XFSB"):
		return "xfs"
	case has(0x10040, "_BHRfS_M"):
		return "btrfs"
	case has(4086, "SWAPSPACE2"):
		return "swap"
	case has(0, "hsqs"):
		return "squashfs"
	case has(1024, "\xe2\xe1\xf5\xe0"):
		return "erofs"
	case has(510, "\x55\xaa") && (has(54, "FAT") || has(82, "FAT32")):
		return "vfat"
	}
	return ""
}

// lvmVGName reads the volume group name from an LVM2 physical volume's
// first metadata area (label header, pv_header, mda_header, then the text
// metadata, which starts with "<vgname> {"). "" when it cannot be read.
func lvmVGName(r io.ReaderAt) string {
	label := make([]byte, 4*512)
	if _, err := r.ReadAt(label, 0); err != nil {
		return ""
	}
	var lh []byte
	for s := 0; s < 4; s++ {
		if string(label[s*512:s*512+8]) == "LABELONE" && string(label[s*512+24:s*512+32]) == "LVM2 001" {
			lh = label[s*512 : (s+1)*512]
			break
		}
	}
	if lh == nil {
		return ""
	}
	off := int(binary.LittleEndian.Uint32(lh[20:])) // offset_xl: pv_header within the sector
	if off < 32 || off+40 > len(lh) {
		return ""
	}
	pv := lh[off+32+8:] // skip pv uuid and device size
	// Data area list, then metadata area list, each ending in a zero pair.
	skipList := func(b []byte) ([][2]uint64, []byte) {
		var out [][2]uint64
		for len(b) >= 16 {
			o, n := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
			b = b[16:]
			if o == 0 && n == 0 {
				break
			}
			out = append(out, [2]uint64{o, n})
		}
		return out, b
	}
	_, pv = skipList(pv)
	mdas, _ := skipList(pv)
	if len(mdas) == 0 {
		return ""
	}
	mdaStart := int64(mdas[0][0])
	mh := make([]byte, 512)
	if _, err := r.ReadAt(mh, mdaStart); err != nil || string(mh[4:20]) != " LVM2 x[5A%r0N*>" {
		return ""
	}
	textOff, textLen := binary.LittleEndian.Uint64(mh[40:]), binary.LittleEndian.Uint64(mh[48:])
	if textLen == 0 {
		return ""
	}
	text := make([]byte, min(textLen, 256))
	if _, err := r.ReadAt(text, mdaStart+int64(textOff)); err != nil {
		return ""
	}
	name, _, ok := strings.Cut(string(text), " {")
	if !ok || name == "" || strings.ContainsAny(name, "\n\x00") {
		return ""
	}
	return name
}

// rootSubvolumes are the btrfs subvolumes distributions keep / in, tried
// when the default subvolume holds no os-release (openSUSE uses the
// default subvolume; Ubuntu "@", Fedora "root").
func rootSubvolumes() []string { return []string{"@", "@rootfs", "root"} }

// hasOSRelease reports whether dir is the root of an installed system.
func hasOSRelease(dir string) bool {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		// Lstat: etc/os-release is usually a relative symlink to
		// ../usr/lib/os-release, which must not be followed out of dir.
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			return true
		}
	}
	return false
}

// looksLikeBoot reports whether dir is a /boot partition: kernels, grub
// or a systemd-boot loader directory, and no os-release.
func looksLikeBoot(dir string) bool {
	for _, p := range []string{"grub", "grub2", "loader"} {
		if st, err := os.Stat(filepath.Join(dir, p)); err == nil && st.IsDir() {
			return true
		}
	}
	m, _ := filepath.Glob(filepath.Join(dir, "vmlinuz*"))
	return len(m) > 0
}

// rootCandidate is a partition probed for the root file system.
type rootCandidate struct {
	part    *wire.Partition
	dev     string
	fstype  string
	data    string // mount options (subvol=...)
	release func() // detaches the loop device, if any
}

// candidateRank orders partitions for the root search: the discoverable
// root types first, then generic Linux data; -1 for others.
func candidateRank(typ string) int {
	switch typ {
	case guidRootX86_64, guidRootARM64:
		return 0
	case guidLinuxData, "0x83":
		return 1
	}
	return -1
}

// mountProbe mounts dev read-only (with data) on dir and reports what it
// holds: "root", "boot" or "". The mount is released before returning.
func mountProbe(dev, dir, fstype, data string) (string, error) {
	if err := syscall.Mount(dev, dir, fstype, syscall.MS_RDONLY, data); err != nil {
		return "", fmt.Errorf("mounting %s (%s%s) read-only: %w", dev, fstype, optSuffix(data), err)
	}
	role := ""
	switch {
	case hasOSRelease(dir):
		role = roleRoot
	case looksLikeBoot(dir):
		role = roleBoot
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		return role, fmt.Errorf("unmounting %s: %w", dir, err)
	}
	return role, nil
}

func optSuffix(data string) string {
	if data == "" {
		return ""
	}
	return ", " + data
}

// describe renders a partition for a failure reason.
func describe(p wire.Partition) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", p.Number)
	if p.Name != "" {
		fmt.Fprintf(&b, " %q", p.Name)
	}
	fmt.Fprintf(&b, " (%s, %s", typeName(p.Type), human(p.SizeBytes))
	if p.FS != "" {
		b.WriteString(", " + p.FS)
	}
	b.WriteString(")")
	return b.String()
}

func describeAll(parts []wire.Partition) string {
	if len(parts) == 0 {
		return "none (no GPT or MBR partition table)"
	}
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = describe(p)
	}
	return strings.Join(s, "; ")
}

// partitionAccess gives a device node for a partition of the target.
type partitionAccess interface {
	open(p wire.Partition) (dev string, release func(), err error)
}

// findRoot labels every partition with its file system and role and returns
// the root file system: the first candidate (by type rank, then table
// order) whose mount holds etc/os-release or usr/lib/os-release. Partitions
// are only ever mounted read-only here.
func findRoot(r io.ReaderAt, parts []wire.Partition, acc partitionAccess, dir string) (*rootCandidate, error) {
	buf := make([]byte, sniffLen)
	var lvm []string
	for i := range parts {
		p := &parts[i]
		n, err := r.ReadAt(buf[:min(int64(len(buf)), p.SizeBytes)], p.StartBytes)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading partition %d: %w", p.Number, err)
		}
		p.FS = sniffFS(buf[:n])
		switch {
		case p.Type == guidESP || p.Type == "0xef":
			p.Role = roleESP
		case p.Type == guidBIOSBoot:
			p.Role = roleBIOSBoot
		case p.Type == guidLinuxSwap || p.Type == "0x82" || p.FS == "swap":
			p.Role = roleSwap
		case p.FS == "lvm2":
			p.Role = roleLVM
			what := fmt.Sprintf("partition %d", p.Number)
			if vg := lvmVGName(io.NewSectionReader(r, p.StartBytes, p.SizeBytes)); vg != "" {
				what = fmt.Sprintf("%q (partition %d)", vg, p.Number)
			}
			lvm = append(lvm, what)
		case p.Type == guidXBootLDR:
			p.Role = roleBoot
		}
	}
	var order []*wire.Partition
	for rank := 0; rank <= 1; rank++ {
		for i := range parts {
			if candidateRank(parts[i].Type) == rank {
				order = append(order, &parts[i])
			}
		}
	}
	var (
		root  *rootCandidate
		notes []string
	)
	for _, p := range order {
		switch p.FS {
		case "ext4", "xfs", "btrfs":
		case "lvm2", "swap":
			continue
		default:
			fs := p.FS
			if fs == "" {
				fs = "no file system lpmos recognises"
			}
			notes = append(notes, fmt.Sprintf("partition %d: %s", p.Number, fs))
			continue
		}
		dev, release, err := acc.open(*p)
		if err != nil {
			notes = append(notes, err.Error())
			continue
		}
		role, data, err := probePartition(dev, dir, p.FS)
		if err != nil {
			release()
			notes = append(notes, fmt.Sprintf("partition %d: %v", p.Number, err))
			continue
		}
		if role == "" {
			release()
			notes = append(notes, fmt.Sprintf("partition %d (%s): no etc/os-release", p.Number, p.FS))
			continue
		}
		if role == roleBoot {
			release()
			p.Role = roleBoot
			notes = append(notes, fmt.Sprintf("partition %d (%s): a /boot file system, no etc/os-release", p.Number, p.FS))
			continue
		}
		if root != nil {
			release() // a second installed system: the first by rank wins
			continue
		}
		p.Role = roleRoot
		// Keep looking: the other partitions' roles go into the report.
		root = &rootCandidate{part: p, dev: dev, fstype: p.FS, data: data, release: release}
	}
	if root != nil {
		return root, nil
	}
	if len(lvm) > 0 {
		return nil, fmt.Errorf("root file system is on LVM volume group %s; lpmos cannot write the seed into LVM yet (partitions: %s)",
			strings.Join(lvm, ", "), describeAll(parts))
	}
	reason := "no Linux root file system in the image (a partition of type Linux root or Linux filesystem holding etc/os-release)"
	if len(notes) > 0 {
		reason += ": " + strings.Join(notes, "; ")
	}
	return nil, fmt.Errorf("%s; partitions: %s", reason, describeAll(parts))
}

// probePartition mounts dev read-only and says whether it is a root or a
// /boot file system. A btrfs volume whose default subvolume is not the
// root is tried with the usual root subvolumes; data is the mount option
// that found the root.
func probePartition(dev, dir, fstype string) (role, data string, err error) {
	role, err = mountProbe(dev, dir, fstype, "")
	if err != nil || role != "" || fstype != "btrfs" {
		return role, "", err
	}
	for _, sv := range rootSubvolumes() {
		opt := "subvol=" + sv
		if r, err := mountProbe(dev, dir, fstype, opt); err == nil && r == roleRoot {
			return r, opt, nil
		}
	}
	return "", "", nil
}
