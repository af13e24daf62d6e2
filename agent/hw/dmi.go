package hw

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lpmos/lpmos/agent/wire"
)

// DMI reads the SMBIOS identity from root/sys/class/dmi/id. Machines without
// SMBIOS (many arm64 boards) have no such directory: that is not an error.
// product_serial and product_uuid are readable by root only.
func DMI(root string) (wire.DMI, error) {
	dir := filepath.Join(root, "sys/class/dmi/id")
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return wire.DMI{}, nil
	}
	var (
		d    wire.DMI
		errs []error
	)
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"sys_vendor", &d.Vendor},
		{"product_name", &d.Product},
		{"product_serial", &d.Serial},
		{"product_uuid", &d.UUID},
		{"bios_vendor", &d.BIOSVendor},
		{"bios_version", &d.BIOSVersion},
		{"bios_date", &d.BIOSDate},
	} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		switch {
		case err == nil:
			*f.dst = strings.TrimSpace(string(b))
		case errors.Is(err, os.ErrNotExist):
		default:
			errs = append(errs, fmt.Errorf("dmi %s: %w", f.name, err))
		}
	}
	return d, errors.Join(errs...)
}

func isEINVAL(err error) bool { return errors.Is(err, syscall.EINVAL) }
