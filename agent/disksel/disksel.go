// Package disksel chooses the disk an install erases, from the disks an
// agent reported and the task's root-device hints (Ironic-style). The
// server runs it when the hardware report arrives, so the operator approves
// a named disk; the agent uses it only when talking to an older server.
// It imports the standard library only: the agent links it.
//
// Matching rules (every hint that is set must match):
//   - name: the kernel name, with or without /dev/ ("sda", "/dev/sda").
//   - serial, model, vendor: exact, ignoring case and surrounding blanks.
//   - wwn: exact, ignoring case; the "naa."/"eui." prefix of the kernel's
//     wwid and a "0x" prefix are ignored ("0x5000c500a1b2c3d4" matches
//     "naa.5000c500a1b2c3d4").
//   - by_path: the udev by-path name, with or without /dev/disk/by-path/;
//     a libata disk also matches the older "-ata-N" form of "-ata-N.0".
//   - min_size_bytes / max_size_bytes: inclusive bounds in bytes.
//   - rotational: true selects spinning disks, false SSD/NVMe.
//
// Removable disks (USB sticks, card readers) are never chosen by hints or
// by default. With hints, exactly one fixed disk must match; without, the
// smallest fixed disk that holds the image wins.
package disksel

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
)

// Selection errors; the message lists the disks so the operator can fix
// the hints without going to the machine.
var (
	ErrNoMatch   = errors.New("no disk matches")
	ErrAmbiguous = errors.New("several disks match")
	ErrTooSmall  = errors.New("disk too small for the image")
)

// IsSelection reports whether err is a selection failure (as opposed to a
// store or network error): the task should fail with it as the reason.
func IsSelection(err error) bool {
	return errors.Is(err, ErrNoMatch) || errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrTooSmall)
}

// IsZero reports whether no hint is set.
func IsZero(h *wire.RootDeviceHints) bool {
	return h == nil || *h == wire.RootDeviceHints{}
}

// Select returns the disk to erase for an image of need bytes.
func Select(disks []wire.Disk, h *wire.RootDeviceHints, need int64) (wire.Disk, error) {
	fits := func(d wire.Disk) bool { return d.SizeBytes >= uint64(max(need, 1)) }
	if IsZero(h) {
		best := -1
		for i, d := range disks {
			if d.Removable || !fits(d) {
				continue
			}
			if best < 0 || d.SizeBytes < disks[best].SizeBytes {
				best = i
			}
		}
		if best < 0 {
			what := "no fixed (non-removable) disk"
			if need > 0 {
				what += " of at least " + Size(uint64(need))
			}
			return wire.Disk{}, fmt.Errorf("%w: %s among %d: %s", ErrNoMatch, what, len(disks), List(disks))
		}
		return disks[best], nil
	}
	var found []wire.Disk
	for _, d := range disks {
		if !d.Removable && Match(d, *h) {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0:
		return wire.Disk{}, fmt.Errorf("%w root_device_hints %s (removable disks are never chosen); disks: %s", ErrNoMatch, String(*h), List(disks))
	case len(found) > 1:
		return wire.Disk{}, fmt.Errorf("%w root_device_hints %s: %s; add a hint that tells them apart (serial, wwn, by_path)", ErrAmbiguous, String(*h), List(found))
	case !fits(found[0]):
		return wire.Disk{}, fmt.Errorf("%w: %s matches root_device_hints %s but the image needs %s", ErrTooSmall, Describe(found[0]), String(*h), Size(uint64(need)))
	}
	return found[0], nil
}

// Match reports whether d satisfies every hint set in h.
func Match(d wire.Disk, h wire.RootDeviceHints) bool {
	eq := func(hint, v string) bool {
		return hint == "" || strings.EqualFold(strings.TrimSpace(hint), strings.TrimSpace(v))
	}
	return (h.Name == "" || strings.TrimPrefix(strings.TrimSpace(h.Name), "/dev/") == d.Name) &&
		eq(h.Serial, d.Serial) && eq(h.Model, d.Model) && eq(h.Vendor, d.Vendor) &&
		(h.WWN == "" || d.WWN != "" && normWWN(h.WWN) == normWWN(d.WWN)) &&
		(h.ByPath == "" || d.ByPath != "" && matchByPath(h.ByPath, d.ByPath)) &&
		(h.MinSizeBytes == 0 || d.SizeBytes >= h.MinSizeBytes) &&
		(h.MaxSizeBytes == 0 || d.SizeBytes <= h.MaxSizeBytes) &&
		(h.Rotational == nil || *h.Rotational == d.Rotational)
}

func normWWN(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, p := range []string{"naa.", "eui.", "0x"} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

func matchByPath(hint, bp string) bool {
	hint = strings.TrimPrefix(strings.TrimSpace(hint), "/dev/disk/by-path/")
	if hint == bp {
		return true
	}
	// udev before v250 named a libata disk "...-ata-1", later "...-ata-1.0".
	i := strings.LastIndex(bp, "-ata-")
	return i >= 0 && strings.HasSuffix(bp, ".0") && strings.Count(bp[i:], ".") == 1 && hint == strings.TrimSuffix(bp, ".0")
}

// Resolve finds the one disk named by sel: its kernel name (with or without
// /dev/), serial, wwn or by-path name. Used when an operator names the disk
// at approval.
func Resolve(disks []wire.Disk, sel string) (wire.Disk, error) {
	sel = strings.TrimSpace(sel)
	if sel == "" {
		return wire.Disk{}, fmt.Errorf("%w: empty disk name", ErrNoMatch)
	}
	var found []wire.Disk
	for _, d := range disks {
		if Match(d, wire.RootDeviceHints{Name: sel}) ||
			d.Serial != "" && strings.EqualFold(sel, d.Serial) ||
			d.WWN != "" && normWWN(sel) == normWWN(d.WWN) ||
			d.ByPath != "" && matchByPath(sel, d.ByPath) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return wire.Disk{}, fmt.Errorf("%w %q (by name, serial, wwn or by-path); disks: %s", ErrNoMatch, sel, List(disks))
	case 1:
		return found[0], nil
	}
	return wire.Disk{}, fmt.Errorf("%w %q: %s; name one by its kernel name", ErrAmbiguous, sel, List(found))
}

// Same checks that got (found now under the chosen name) is the disk that
// was chosen: same size, and same wwn and serial where the choice had them.
func Same(want, got wire.Disk) error {
	var diff []string
	if want.WWN != "" && normWWN(want.WWN) != normWWN(got.WWN) {
		diff = append(diff, fmt.Sprintf("wwn %q, want %q", got.WWN, want.WWN))
	}
	if want.Serial != "" && !strings.EqualFold(strings.TrimSpace(want.Serial), strings.TrimSpace(got.Serial)) {
		diff = append(diff, fmt.Sprintf("serial %q, want %q", got.Serial, want.Serial))
	}
	if want.SizeBytes != got.SizeBytes {
		diff = append(diff, fmt.Sprintf("size %d bytes, want %d", got.SizeBytes, want.SizeBytes))
	}
	if len(diff) > 0 {
		return fmt.Errorf("/dev/%s is not the disk chosen before approval (%s): %s", got.Name, Describe(want), strings.Join(diff, ", "))
	}
	return nil
}

// Describe is one line naming a disk for a person:
// "/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456".
func Describe(d wire.Disk) string {
	parts := []string{"/dev/" + d.Name, Size(d.SizeBytes)}
	model := strings.TrimSpace(d.Model)
	if v := strings.TrimSpace(d.Vendor); v != "" && !strings.EqualFold(v, "ATA") && !strings.HasPrefix(strings.ToUpper(model), strings.ToUpper(v)) {
		model = strings.TrimSpace(v + " " + model)
	}
	if model != "" {
		parts = append(parts, model)
	}
	if d.Serial != "" {
		parts = append(parts, "serial "+d.Serial)
	}
	if d.WWN != "" {
		parts = append(parts, "wwn "+d.WWN)
	}
	if d.Rotational {
		parts = append(parts, "rotational")
	}
	if d.Removable {
		parts = append(parts, "removable")
	}
	return strings.Join(parts, ", ")
}

// List describes every disk, "; "-separated.
func List(disks []wire.Disk) string {
	if len(disks) == 0 {
		return "(none reported)"
	}
	s := make([]string, len(disks))
	for i, d := range disks {
		s[i] = Describe(d)
	}
	return strings.Join(s, "; ")
}

// Size formats bytes in decimal units as disk labels do: "480 GB", "4.0 TB".
func Size(b uint64) string {
	switch {
	case b >= 1e12:
		return fmt.Sprintf("%.1f TB", float64(b)/1e12)
	case b >= 1e9:
		return fmt.Sprintf("%.0f GB", float64(b)/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.0f MB", float64(b)/1e6)
	}
	return fmt.Sprintf("%d bytes", b)
}

// ParseSize reads a size: a number of bytes, or a number with a unit.
// Decimal units as on disk labels: K/KB, M/MB, G/GB, T/TB (powers of 1000);
// binary units: KiB, MiB, GiB, TiB. Case and a space before the unit are
// ignored: "100G", "1.5 TB", "512GiB", "480103981056".
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || v < 0 {
		return 0, fmt.Errorf("size %q: want bytes or a number with a unit (100G, 1.5TB, 512GiB)", s)
	}
	v *= mult
	if v >= math.MaxUint64 || v != math.Trunc(v) && unit == "" {
		return 0, fmt.Errorf("size %q: want a whole number of bytes", s)
	}
	return uint64(v), nil
}

// Validate checks hints; the error names the bad field.
func Validate(h wire.RootDeviceHints) error {
	for _, f := range []struct{ name, v string }{
		{"name", h.Name}, {"serial", h.Serial}, {"wwn", h.WWN}, {"model", h.Model}, {"vendor", h.Vendor}, {"by_path", h.ByPath},
	} {
		if len(f.v) > 256 {
			return fmt.Errorf("root_device_hints.%s is longer than 256 bytes", f.name)
		}
		if f.v != "" && strings.TrimSpace(f.v) == "" {
			return fmt.Errorf("root_device_hints.%s is blank", f.name)
		}
		for _, r := range f.v {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("root_device_hints.%s %q holds a control character", f.name, f.v)
			}
		}
	}
	if n := strings.TrimPrefix(strings.TrimSpace(h.Name), "/dev/"); strings.ContainsAny(n, "/ ") {
		return fmt.Errorf("root_device_hints.name %q: want a kernel disk name like sda or /dev/nvme0n1 (use by_path for /dev/disk/by-path names)", h.Name)
	}
	if h.MinSizeBytes > 0 && h.MaxSizeBytes > 0 && h.MinSizeBytes > h.MaxSizeBytes {
		return fmt.Errorf("root_device_hints.min_size_bytes (%d) is larger than max_size_bytes (%d)", h.MinSizeBytes, h.MaxSizeBytes)
	}
	return nil
}

// String formats hints in the syntax ParseHints reads, keys sorted as the
// struct: "name=sda,min-size=100000000000".
func String(h wire.RootDeviceHints) string {
	var kv []string
	add := func(k, v string) {
		if v != "" {
			kv = append(kv, k+"="+v)
		}
	}
	add("name", h.Name)
	add("serial", h.Serial)
	add("wwn", h.WWN)
	add("model", h.Model)
	add("vendor", h.Vendor)
	add("by-path", h.ByPath)
	if h.MinSizeBytes > 0 {
		add("min-size", strconv.FormatUint(h.MinSizeBytes, 10))
	}
	if h.MaxSizeBytes > 0 {
		add("max-size", strconv.FormatUint(h.MaxSizeBytes, 10))
	}
	if h.Rotational != nil {
		add("rotational", strconv.FormatBool(*h.Rotational))
	}
	return "{" + strings.Join(kv, ",") + "}"
}

// ParseHints reads "key=value,key=value" (the CLI's --root-device): keys
// name, serial, wwn, model, vendor, by-path, min-size, max-size (sizes as
// ParseSize), rotational (true/false). A value cannot hold a comma.
func ParseHints(s string) (wire.RootDeviceHints, error) {
	var h wire.RootDeviceHints
	for _, item := range strings.Split(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok || v == "" {
			return h, fmt.Errorf("root device hint %q: want key=value", item)
		}
		var err error
		switch strings.ReplaceAll(k, "_", "-") {
		case "name":
			h.Name = v
		case "serial":
			h.Serial = v
		case "wwn":
			h.WWN = v
		case "model":
			h.Model = v
		case "vendor":
			h.Vendor = v
		case "by-path":
			h.ByPath = v
		case "min-size":
			h.MinSizeBytes, err = ParseSize(v)
		case "max-size":
			h.MaxSizeBytes, err = ParseSize(v)
		case "rotational":
			var b bool
			b, err = strconv.ParseBool(v)
			h.Rotational = &b
		default:
			return h, fmt.Errorf("root device hint %q: unknown key (name, serial, wwn, model, vendor, by-path, min-size, max-size, rotational)", k)
		}
		if err != nil {
			return h, fmt.Errorf("root device hint %s: %w", k, err)
		}
	}
	return h, Validate(h)
}
