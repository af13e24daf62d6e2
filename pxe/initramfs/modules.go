package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the drivers the agent needs on virtual machines and
// common servers: virtio, server NICs, disk controllers, and the file
// systems the installer mounts (ext4 is usually built in). Names the kernel
// does not have as modules are skipped; built-in ones need nothing.
var DefaultModules = []string{
	// virtio (qemu/KVM, most clouds)
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi",
	// NICs
	"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice", "bnxt_en", "bnx2x", "tg3",
	"mlx4_en", "mlx5_core", "be2net", "qede", "r8169", "vmxnet3", "ena", "gve", "hv_netvsc",
	// storage
	"ahci", "ata_piix", "nvme", "sd_mod", "megaraid_sas", "mpt3sas", "hpsa", "smartpqi",
	"aacraid", "vmw_pvscsi", "hv_storvsc", "xen_blkfront",
	// file systems of installed roots
	"ext4", "xfs",
	// btrfs roots (openSUSE, Fedora, Ubuntu with "@"): the agent mounts the
	// root subvolume to write the seed. It pulls in raid6_pq, whose
	// load-time benchmark costs a second or more on emulated CPUs; the
	// agent loads modules once, so it is paid once per boot. Its checksum
	// drivers are soft dependencies, not in modules.dep: crc32c (the
	// default) must be there for the mount to work.
	"btrfs", "crc32c_generic", "crc32c_intel", "xxhash_generic",
	// the EFI system partition (vfat with its default codepage 437 and
	// iocharset ascii; utf8 for mounts that ask for it) and efivarfs, for
	// registering the UEFI boot entry of an install (Debian's cloud kernel
	// builds them all as modules)
	"vfat", "nls_cp437", "nls_ascii", "nls_utf8", "efivarfs",
}

// modName is the kernel's name of a module file or a depends= entry:
// the base name without .ko[.gz|.xz|.zst], '-' read as '_'.
func modName(p string) string {
	b := filepath.Base(p)
	for _, ext := range []string{".gz", ".xz", ".zst"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

func isModuleFile(p string) bool {
	for _, ext := range []string{".ko", ".ko.gz", ".ko.xz", ".ko.zst"} {
		if strings.HasSuffix(p, ext) {
			return true
		}
	}
	return false
}

// module is one entry of the dependency index.
type module struct {
	path        string   // relative to the release directory
	deps        []string // module names this one needs
	unknownDeps bool     // compressed, and no modules.dep to tell
}

// index is what modules.dep says (or what the modules' .modinfo say).
type index struct {
	mods    map[string]module
	builtin map[string]bool
	source  string // "modules.dep" or "modinfo"
}

// readIndex loads the dependency index of a release directory: from
// modules.dep when depmod ran, otherwise from each module's .modinfo
// depends= (a kernel unpacked with dpkg-deb -x has no modules.dep).
func readIndex(dir string) (*index, error) {
	ix := &index{mods: map[string]module{}, builtin: map[string]bool{}}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(data)) {
			ix.builtin[modName(line)] = true
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	switch {
	case err == nil:
		ix.source = "modules.dep"
		return ix, ix.parseDep(data)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	ix.source = "modinfo"
	return ix, ix.scan(dir)
}

// parseDep reads modules.dep lines "kernel/a/b.ko: kernel/c.ko kernel/d.ko".
func (ix *index) parseDep(data []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, rest, ok := strings.Cut(line, ":")
		if !ok || !isModuleFile(p) {
			return fmt.Errorf("modules.dep line %d: %q is not \"module.ko: deps...\"", n, line)
		}
		m := module{path: p}
		for _, d := range strings.Fields(rest) {
			m.deps = append(m.deps, modName(d))
		}
		ix.mods[modName(p)] = m
	}
	return sc.Err()
}

// scan walks dir/kernel (and dir/updates, dir/extra) and reads depends= from
// every module's .modinfo section. Compressed modules other than gzip are
// indexed without dependencies: reading them needs xz/zstd.
func (ix *index) scan(dir string) error {
	found := false
	for _, sub := range []string{"kernel", "updates", "extra"} {
		root := filepath.Join(dir, sub)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		found = true
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !isModuleFile(p) {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			m := module{path: filepath.ToSlash(rel)}
			if strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.gz") {
				info, err := readModinfo(p)
				if err != nil {
					return fmt.Errorf("%s: %w", rel, err)
				}
				for _, d := range strings.Split(info["depends"], ",") {
					if d = strings.TrimSpace(d); d != "" {
						m.deps = append(m.deps, modName(d))
					}
				}
			} else {
				m.unknownDeps = true
			}
			name := modName(p)
			if _, dup := ix.mods[name]; !dup || sub == "updates" {
				ix.mods[name] = m
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if !found {
		return fmt.Errorf("neither modules.dep nor a kernel/ directory in %s", dir)
	}
	return nil
}

// readModule returns a module file's ELF bytes (gunzipped for .ko.gz).
func readModule(p string) ([]byte, error) {
	data, err := os.ReadFile(p)
	if err != nil || !strings.HasSuffix(p, ".gz") {
		return data, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// readModinfo parses the NUL-separated key=value strings of .modinfo.
func readModinfo(p string) (map[string]string, error) {
	data, err := readModule(p)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			if _, seen := info[k]; !seen {
				info[k] = v
			}
		}
	}
	return info, nil
}

// resolution is the outcome of resolving the wanted modules.
type resolution struct {
	order   []module // dependencies first
	builtin []string // wanted, built into the kernel
	missing []string // wanted, neither a module nor built in
}

// resolve returns the wanted modules and everything they depend on, each
// once, every module after its dependencies (the order modprobe loads them).
func (ix *index) resolve(wanted []string) (resolution, error) {
	var r resolution
	done := map[string]bool{}
	active := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		if done[name] {
			return nil
		}
		if active[name] {
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		m, ok := ix.mods[name]
		if !ok {
			if ix.builtin[name] {
				done[name] = true
				return nil
			}
			return fmt.Errorf("module %s (needed by %s) is not in %s", name, strings.Join(chain, " -> "), ix.source)
		}
		active[name] = true
		// modules.dep lists a module's dependencies so that loading them
		// from last to first works; visiting each first keeps that order
		// and also covers a list that is not transitive (modinfo).
		for i := len(m.deps) - 1; i >= 0; i-- {
			if err := visit(m.deps[i], append(chain, name)); err != nil {
				return err
			}
		}
		active[name] = false
		done[name] = true
		r.order = append(r.order, m)
		return nil
	}
	for _, w := range wanted {
		name := modName(w)
		if _, ok := ix.mods[name]; !ok {
			if ix.builtin[name] {
				r.builtin = append(r.builtin, name)
			} else {
				r.missing = append(r.missing, name)
			}
			continue
		}
		if err := visit(name, nil); err != nil {
			return r, err
		}
	}
	sort.Strings(r.builtin)
	sort.Strings(r.missing)
	return r, nil
}
