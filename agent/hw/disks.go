package hw

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
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
	// NVMe and virtio expose a serial; SCSI/SATA only a wwid (the serial
	// proper is in binary VPD page 0x80, which udev decodes, not sysfs).
	for _, rel := range []string{"/device/serial", "/serial", "/wwid", "/device/wwid"} {
		if d.Serial = readTrim(root, base+rel); d.Serial != "" {
			break
		}
	}
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
