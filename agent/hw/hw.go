// Package hw collects the agent's hardware report from /proc and /sys.
//
// Every reader takes the root of the tree to read (normally "/") so tests
// run against fixture trees. A malformed or missing entry leaves only its
// own field empty: the report is always usable, and Collect returns the
// problems it met as one joined error for the caller to log.
package hw

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

// Collect reads the hardware of the machine whose /proc and /sys are under
// root. The returned Hardware is always filled as far as possible; err (an
// errors.Join of every problem) is non-nil when some fields were unreadable.
func Collect(root string) (wire.Hardware, error) {
	var errs []error
	cpu, err := CPU(root)
	errs = append(errs, err)
	mem, err := Memory(root)
	errs = append(errs, err)
	disks, err := Disks(root)
	errs = append(errs, err)
	nics, err := NICs(root)
	errs = append(errs, err)
	dmi, err := DMI(root)
	errs = append(errs, err)

	return wire.Hardware{
		CPU:         cpu,
		Memory:      mem,
		Disks:       disks,
		NICs:        nics,
		DMI:         dmi,
		BootMode:    BootMode(root),
		Hostname:    hostname(root),
		Kernel:      readTrim(root, "proc/sys/kernel/osrelease"),
		CollectedAt: time.Now().UTC(),
	}, errors.Join(errs...)
}

// BootMode is "uefi" when the kernel was booted by UEFI firmware (it then
// exposes /sys/firmware/efi), else "bios".
func BootMode(root string) string {
	if _, err := os.Stat(filepath.Join(root, "sys/firmware/efi")); err == nil {
		return "uefi"
	}
	return "bios"
}

func hostname(root string) string {
	h := readTrim(root, "proc/sys/kernel/hostname")
	if h == "(none)" { // what an initramfs without a hostname reports
		return ""
	}
	return h
}

// readTrim returns the trimmed content of root/rel, or "" when it cannot be
// read: sysfs attributes are optional and vary by driver, so absence is
// normal and not an error.
func readTrim(root, rel string) string {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readInt parses root/rel as a decimal integer. ok is false when the file
// is absent; err is set when it exists but does not hold a number.
func readInt(root, rel string) (v int64, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, false, nil
		}
		return 0, false, err
	}
	v, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, err
	}
	return v, true, nil
}

// isHostRoot reports whether root names the running system, where asking
// the kernel directly (syscall.Sysinfo, runtime.NumCPU) is a valid fallback.
func isHostRoot(root string) bool {
	return filepath.Clean(root) == "/" && runtime.GOOS == "linux"
}
