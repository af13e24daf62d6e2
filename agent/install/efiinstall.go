package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// makeUEFIBootable runs after the image and the seed are written. On a
// machine that booted through UEFI it finds the image's EFI system
// partition and its boot loader, installs the removable-media fallback
// (\EFI\BOOT\BOOT<ARCH>.EFI) when the image has only a distro path, and
// registers a Boot#### entry for the loader right after the network boot
// option in BootOrder, so the next boot still asks lpmos first and then
// starts the installed OS. BIOS boots need none of this. It returns a
// message for the progress report ("" when nothing was done).
//
// Only a block device install touches the firmware: a regular-file disk
// (tests, rehearsals) is never registered unless Options.EFIVarsDir says
// where (a fake) efivarfs is.
func (in *installer) makeUEFIBootable(t *target) (string, error) {
	varsDir := in.o.EFIVarsDir
	if varsDir == "" {
		if !t.block {
			in.log.Info("UEFI boot entry skipped: the target is a file, not this machine's disk", "disk", t.path)
			return "", nil
		}
		if _, err := os.Stat(efiFirmwareDir); err != nil {
			in.log.Info("UEFI boot entry skipped: this machine booted through BIOS (no "+efiFirmwareDir+")", "disk", t.path)
			return "", nil
		}
		varsDir = EFIVarsDir
		if err := mountEfivarfs(varsDir); err != nil {
			return "", err
		}
	}
	esp, err := findESP(t.f)
	if errors.Is(err, errNoESP) {
		in.log.Warn("the image has no EFI system partition: this UEFI machine can boot it only through legacy (CSM) boot", "disk", t.path)
		return "no EFI system partition in the image, no UEFI boot entry", nil
	}
	if err != nil {
		return "", fmt.Errorf("finding the EFI system partition: %w", err)
	}
	where := fmt.Sprintf("EFI system partition %d of %s", esp.Number, t.path)

	dev, release, err := in.partitionNode(t, int(esp.Number), esp.byteRange)
	if err != nil {
		return "", fmt.Errorf("%s: %w", where, err)
	}
	defer release()
	dir, err := os.MkdirTemp("", "lpmos-esp-")
	if err != nil {
		return "", fmt.Errorf("mount point: %w", err)
	}
	defer os.Remove(dir)
	var fs espMounter = kernelVFAT{}
	if in.o.espFS != nil {
		fs = in.o.espFS
	}
	if err := fs.mount(dev, dir); err != nil {
		return "", fmt.Errorf("%s: mounting %s (vfat): %w", where, dev, err)
	}
	arch := efiArch(runtime.GOARCH)
	loader, ferr := findLoader(dir, arch)
	var copied []string
	if ferr == nil {
		copied, ferr = installFallback(dir, loader, arch)
	}
	syscall.Sync()
	if err := fs.unmount(dir); err != nil {
		return "", errors.Join(ferr, fmt.Errorf("unmounting %s: %w", dir, err))
	}
	if ferr != nil {
		return "", fmt.Errorf("%s: %w", where, ferr)
	}

	desc := strings.TrimSpace(lpmosDescription + in.spec.OSType + " " + in.spec.OSVersion)
	num, order, err := registerBootEntry(efiVars{dir: varsDir}, desc, esp, loader.efiPath())
	if err != nil {
		return "", fmt.Errorf("registering the UEFI boot entry: %w", err)
	}
	hex := make([]string, len(order))
	for i, n := range order {
		hex[i] = fmt.Sprintf("%04X", n)
	}
	msg := fmt.Sprintf("UEFI boot entry %s %q -> %s on partition %d; BootOrder %s", bootName(num), desc, loader.efiPath(), esp.Number, strings.Join(hex, ","))
	if len(copied) > 0 {
		msg += "; removable fallback " + `\` + strings.ReplaceAll(copied[0], "/", `\`) + " installed"
	}
	in.log.Info("UEFI boot entry registered", "entry", bootName(num), "description", desc, "loader", loader.efiPath(),
		"esp", esp.Number, "esp_guid", formatGUID(esp.GUID[:]), "boot_order", strings.Join(hex, ","), "fallback", copied)
	return msg, nil
}

// partitionNode gives a device node for partition n of the target: the
// kernel's partition node for a block device (after re-reading the table),
// a loop device over the partition's bytes for a regular file.
func (in *installer) partitionNode(t *target, n int, byteRange func() (int64, int64)) (string, func(), error) {
	if !t.block {
		off, size := byteRange()
		loop, err := attachLoop(t.f, off, size)
		if err != nil {
			return "", nil, err
		}
		return loop.path, func() {
			if err := loop.detach(); err != nil {
				in.log.Warn("detaching loop device", "device", loop.path, "error", err)
			}
		}, nil
	}
	if err := t.rereadPartitions(); err != nil {
		return "", nil, err
	}
	if err := t.releaseExclusive(); err != nil {
		return "", nil, err
	}
	disk, err := filepath.EvalSymlinks(t.path)
	if err != nil {
		return "", nil, fmt.Errorf("resolving %s: %w", t.path, err)
	}
	dev := partitionDevice(disk, n)
	f, err := openWhenPresent(dev, os.O_RDONLY)
	if err != nil {
		return "", nil, err
	}
	f.Close()
	return dev, func() {}, nil
}
