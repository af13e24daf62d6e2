package hw

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
)

// SkipDisk reports whether a /sys/block entry is never an install target:
// loop, ram disks, compressed swap, device-mapper and md assemblies (built
// on top of real disks that are listed anyway), optical drives, floppies,
// network block devices.
func SkipDisk(name string) bool {
	for _, p := range [...]string{"loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Disks lists root/sys/block, skipping devices that cannot be install
// targets (see SkipDisk), sorted by name.
func Disks(root string) ([]wire.Disk, error) {
	dir := filepath.Join(root, "sys/block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("disks: %w", err)
	}
	disks := []wire.Disk{}
	var errs []error
	for _, e := range entries {
		if SkipDisk(e.Name()) {
			continue
		}
		d, err := disk(root, e.Name())
		disks = append(disks, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("disk %s: %w", e.Name(), err))
		}
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	return disks, errors.Join(errs...)
}

func disk(root, name string) (wire.Disk, error) {
	base := filepath.Join("sys/block", name)
	d := wire.Disk{Name: name}
	var errs []error
	// size is always in 512-byte units, whatever the logical block size.
	if sectors, ok, err := readInt(root, base+"/size"); err != nil {
		errs = append(errs, fmt.Errorf("size: %w", err))
	} else if ok && sectors >= 0 {
		d.SizeBytes = uint64(sectors) * 512
	}
	d.Model = readTrim(root, base+"/device/model")
	// SCSI/ATA vendor; virtio's device/vendor is a numeric id, not a name.
	if d.Vendor = readTrim(root, base+"/device/vendor"); strings.HasPrefix(d.Vendor, "0x") {
		d.Vendor = ""
	}
	// NVMe and virtio expose a serial; SCSI/SATA disks have it in VPD page
	// 0x80 (unit serial number), which sysfs shows raw as device/vpd_pg80.
	for _, rel := range []string{"/device/serial", "/serial"} {
		if d.Serial = readTrim(root, base+rel); d.Serial != "" {
			break
		}
	}
	if d.Serial == "" {
		d.Serial = vpdSerial(root, base+"/device/vpd_pg80")
	}
	for _, rel := range []string{"/wwid", "/device/wwid"} {
		if d.WWN = readTrim(root, base+rel); d.WWN != "" {
			break
		}
	}
	d.ByPath = ByPath(root, name)
	if v, ok, err := readInt(root, base+"/queue/rotational"); err != nil {
		errs = append(errs, fmt.Errorf("rotational: %w", err))
	} else if ok {
		d.Rotational = v == 1
	}
	if v, ok, err := readInt(root, base+"/removable"); err != nil {
		errs = append(errs, fmt.Errorf("removable: %w", err))
	} else if ok {
		d.Removable = v == 1
	}
	return d, errors.Join(errs...)
}

// vpdSerial decodes a SCSI VPD page 0x80 (unit serial number): a 4-byte
// header (page code 0x80, 16-bit big-endian length) then ASCII.
func vpdSerial(root, rel string) string {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	b = b[4:]
	if n < len(b) {
		b = b[:n]
	}
	return strings.TrimSpace(strings.ToValidUTF8(strings.TrimRight(string(b), "\x00"), ""))
}

// ByPath derives the name udev's path_id gives a disk (the link under
// /dev/disk/by-path), from the sysfs device path /sys/block/name points
// at; the initramfs has no udev. Known transports: virtio
// ("pci-0000:00:05.0"), NVMe ("pci-0000:3b:00.0-nvme-1"), libata
// ("pci-0000:00:17.0-ata-1.0", udev's current form; disksel also matches
// the older "-ata-1"), USB storage ("pci-0000:00:14.0-usb-0:4:1.0-scsi-0:0:0:0")
// and other SCSI hosts ("pci-0000:18:00.0-scsi-0:2:0:0"). Anything else
// (virtual devices, NVMe multipath heads, unknown buses) gives "".
func ByPath(root, name string) string {
	link := filepath.Join(root, "sys/block", name)
	target, err := os.Readlink(link)
	if err != nil {
		return ""
	}
	devices := filepath.Join(root, "sys/devices")
	rel, err := filepath.Rel(devices, filepath.Join(filepath.Dir(link), target))
	if err != nil || strings.HasPrefix(rel, "..") {
		return ""
	}
	parts := strings.Split(rel, string(filepath.Separator))
	var segs []string // innermost first
	transport := false
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		switch {
		case p == "virtual":
			return ""
		case isPCIAddr(p):
			if !transport {
				return ""
			}
			segs = append(segs, "pci-"+p)
			for l, r := 0, len(segs)-1; l < r; l, r = l+1, r-1 {
				segs[l], segs[r] = segs[r], segs[l]
			}
			return strings.Join(segs, "-")
		case isSCSIAddr(p) && i >= 2 && strings.HasPrefix(parts[i-1], "target") && strings.HasPrefix(parts[i-2], "host"):
			transport = true
			var h, b, t, l int
			_, _ = fmt.Sscanf(p, "%d:%d:%d:%d", &h, &b, &t, &l) // isSCSIAddr checked the form
			if i >= 3 && isATAPort(parts[i-3]) {
				port := readTrim("/", filepath.Join(devices, filepath.Join(parts[:i-2]...), "ata_port", parts[i-3], "port_no"))
				if port == "" {
					port = strings.TrimPrefix(parts[i-3], "ata")
				}
				if b != 0 { // behind a port multiplier
					segs = append(segs, fmt.Sprintf("ata-%s.%d.0", port, b))
				} else {
					segs = append(segs, fmt.Sprintf("ata-%s.%d", port, t))
				}
				i -= 3
				continue
			}
			segs = append(segs, fmt.Sprintf("scsi-%d:%d:%d:%d", h-lowestHost(filepath.Join(devices, filepath.Join(parts[:i-2]...)), h), b, t, l))
			i -= 2
		case isNVMeCtrl(p) && i >= 1 && parts[i-1] == "nvme":
			transport = true
			nsid := readTrim(root, filepath.Join("sys/block", name, "nsid"))
			if nsid == "" {
				_, nsid, _ = strings.Cut(strings.TrimPrefix(name, "nvme"), "n")
			}
			segs = append(segs, "nvme-"+nsid)
			i--
		case isUSBIface(p):
			_, port, _ := strings.Cut(p, "-")
			segs = append(segs, "usb-0:"+port)
		case strings.HasPrefix(p, "virtio") && isDigits(strings.TrimPrefix(p, "virtio")):
			transport = true
		}
	}
	return ""
}

// lowestHost is udev's base for SCSI host numbers: the lowest hostN among
// the host's siblings (so a controller's first host is 0).
func lowestHost(dir string, h int) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return h
	}
	low := h
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "host"); ok && isDigits(n) {
			if v, err := strconv.Atoi(n); err == nil && v < low {
				low = v
			}
		}
	}
	return low
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return s != ""
}

// isPCIAddr matches dddd:bb:dd.f.
func isPCIAddr(s string) bool {
	return len(s) == 12 && s[4] == ':' && s[7] == ':' && s[10] == '.' &&
		isHex(s[:4]) && isHex(s[5:7]) && isHex(s[8:10]) && isDigits(s[11:])
}

// isSCSIAddr matches h:c:t:l.
func isSCSIAddr(s string) bool {
	f := strings.Split(s, ":")
	if len(f) != 4 {
		return false
	}
	for _, x := range f {
		if !isDigits(x) {
			return false
		}
	}
	return true
}

func isATAPort(s string) bool { return strings.HasPrefix(s, "ata") && isDigits(s[3:]) }

func isNVMeCtrl(s string) bool { return strings.HasPrefix(s, "nvme") && isDigits(s[4:]) }

// isUSBIface matches a USB interface, bus-port[.port...]:config.interface.
func isUSBIface(s string) bool {
	dev, iface, ok := strings.Cut(s, ":")
	if !ok {
		return false
	}
	bus, ports, ok := strings.Cut(dev, "-")
	c, in, ok2 := strings.Cut(iface, ".")
	return ok && ok2 && isDigits(bus) && isDigits(strings.ReplaceAll(ports, ".", "")) && isDigits(c) && isDigits(in)
}
