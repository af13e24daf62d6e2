package pid1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"
)

// ModuleOrderFile lists, one per line, the modules the initramfs builder
// resolved from modules.dep in load order (dependencies first). Paths are
// relative to ModuleDir/<kernel release>/ or absolute; '#' starts a comment.
const (
	ModuleDir       = "/lib/modules"
	ModuleOrderFile = "/lib/modules/lpmos.order"
)

// finit_module flags (linux/module.h).
const moduleInitCompressedFile = 4 // the kernel decompresses (.ko.xz/.zst/.gz)

// ParseModuleOrder reads a load-order list.
func ParseModuleOrder(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// LoadModules loads every module of the order file under ModuleDir/release.
// A module that is already loaded (or built in) is fine; one that fails is
// logged and the rest still load: the NIC may work without the odd one.
func LoadModules(log *slog.Logger, orderFile, release string) error {
	data, err := os.ReadFile(orderFile)
	if errors.Is(err, os.ErrNotExist) {
		log.Info("no module list; relying on built-in drivers", "file", orderFile)
		return nil
	}
	if err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	var errs []error
	for _, rel := range ParseModuleOrder(data) {
		path := rel
		if !filepath.IsAbs(path) {
			path = filepath.Join(ModuleDir, release, rel)
		}
		switch err := loadModule(path); {
		case err == nil:
			log.Info("module loaded", "module", filepath.Base(path))
		case errors.Is(err, syscall.EEXIST):
		default:
			log.Warn("module failed to load", "module", path, "error", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(path, ext) {
			flags = moduleInitCompressedFile
		}
	}
	params := []byte{0}
	_, _, errno := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(&params[0])), uintptr(flags))
	if errno != 0 {
		return fmt.Errorf("finit_module %s: %w", path, errno)
	}
	return nil
}

// KernelRelease is uname -r, needed to find /lib/modules/<release>.
func KernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
