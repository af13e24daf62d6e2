// Package initramfs builds the lpmos agent's initramfs: a gzipped newc cpio
// archive with the agent as /init, the kernel modules it needs (resolved
// from modules.dep in load order, listed in /lib/modules/lpmos.order where
// agent/pid1 reads them), /dev/console, and optionally a CA bundle for a
// TLS agent API. The output depends only on the inputs (owners 0, mtimes 0).
package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Paths inside the initramfs. OrderFile and ModulesRoot match agent/pid1
// (ModuleOrderFile, ModuleDir); a test checks they agree.
const (
	OrderFile   = "/lib/modules/lpmos.order"
	ModulesRoot = "/lib/modules"
	CAPath      = "/etc/ssl/certs/ca-certificates.crt"
)

// Options say what goes into the initramfs.
type Options struct {
	// Agent is the /init executable (see package agentbin).
	Agent []byte
	// ModulesDir is the kernel's module tree: either the directory holding
	// <Release>/ (like /lib/modules) or the release directory itself. Empty:
	// no modules (a kernel with the drivers built in).
	ModulesDir string
	// Release is the kernel release (uname -r). Empty: the only release
	// under ModulesDir.
	Release string
	// Modules are the wanted module names; nil means DefaultModules.
	// Their dependencies are added.
	Modules []string
	// KernelConfig is the kernel's config file. Modules compressed with xz
	// or zstd are included only when it says CONFIG_MODULE_DECOMPRESS=y
	// (the agent then lets the kernel decompress them). gzip modules are
	// always decompressed here.
	KernelConfig string
	// CAFile is a PEM bundle installed as CAPath, for an https agent API.
	CAFile string
	// Warn receives what was left out and why; nil discards.
	Warn func(msg string)
}

// Result describes a built initramfs.
type Result struct {
	Release string
	Modules []string // paths (relative to the release dir) in load order
	Builtin []string // wanted modules the kernel has built in
	Missing []string // wanted modules the kernel does not have
	Skipped []string // modules left out (compressed, kernel cannot decompress)
	Index   string   // where dependencies came from: modules.dep or modinfo
	Size    int64    // bytes written (compressed)
}

// FindRelease returns the release directory and release name for dir and
// release as Options describes them.
func FindRelease(dir, release string) (string, string, error) {
	isRelease := func(d string) bool {
		for _, f := range []string{"modules.dep", "modules.order", "kernel"} {
			if _, err := os.Stat(filepath.Join(d, f)); err == nil {
				return true
			}
		}
		return false
	}
	if release != "" {
		if d := filepath.Join(dir, release); isRelease(d) {
			return d, release, nil
		}
		if filepath.Base(filepath.Clean(dir)) == release && isRelease(dir) {
			return dir, release, nil
		}
		return "", "", fmt.Errorf("no modules of kernel %s in %s (want %s/%s/modules.dep or kernel/)", release, dir, dir, release)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("modules dir: %w", err)
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() && isRelease(filepath.Join(dir, e.Name())) {
			found = append(found, e.Name())
		}
	}
	switch {
	case len(found) == 1:
		return filepath.Join(dir, found[0]), found[0], nil
	case len(found) > 1:
		return "", "", fmt.Errorf("%s holds several kernel releases (%s): say which with --kernel-release", dir, strings.Join(found, ", "))
	case isRelease(dir):
		return dir, filepath.Base(filepath.Clean(dir)), nil
	}
	return "", "", fmt.Errorf("no kernel modules in %s (want <release>/modules.dep or <release>/kernel/)", dir)
}

// kernelDecompresses reports whether a kernel config enables in-kernel
// module decompression (finit_module's MODULE_INIT_COMPRESSED_FILE).
func kernelDecompresses(configFile string) (bool, error) {
	if configFile == "" {
		return false, nil
	}
	data, err := os.ReadFile(configFile)
	if err != nil {
		return false, fmt.Errorf("kernel config: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "CONFIG_MODULE_DECOMPRESS=y" {
			return true, nil
		}
	}
	return false, nil
}

// Build writes the gzipped initramfs to w.
func Build(w io.Writer, o Options) (Result, error) {
	var res Result
	if len(o.Agent) == 0 {
		return res, errors.New("initramfs: no agent binary")
	}
	warn := o.Warn
	if warn == nil {
		warn = func(string) {}
	}
	type entry struct {
		rel  string
		data []byte
	}
	var mods []entry
	if o.ModulesDir != "" {
		dir, release, err := FindRelease(o.ModulesDir, o.Release)
		if err != nil {
			return res, err
		}
		res.Release = release
		ix, err := readIndex(dir)
		if err != nil {
			return res, fmt.Errorf("kernel %s: %w", release, err)
		}
		res.Index = ix.source
		wanted := o.Modules
		if wanted == nil {
			wanted = DefaultModules
		}
		r, err := ix.resolve(wanted)
		if err != nil {
			return res, fmt.Errorf("kernel %s: %w", release, err)
		}
		res.Builtin, res.Missing = r.builtin, r.missing
		decompress, err := kernelDecompresses(o.KernelConfig)
		if err != nil {
			return res, err
		}
		skipped := map[string]bool{}
		for _, m := range r.order {
			for _, d := range m.deps {
				if skipped[d] {
					warn(fmt.Sprintf("module %s needs %s, which was left out: it will not load", modName(m.path), d))
				}
			}
			rel := m.path
			switch {
			case strings.HasSuffix(rel, ".ko.xz") || strings.HasSuffix(rel, ".ko.zst"):
				if !decompress {
					skipped[modName(rel)] = true
					res.Skipped = append(res.Skipped, rel)
					warn(fmt.Sprintf("module %s is compressed and the kernel config (%s) does not say CONFIG_MODULE_DECOMPRESS=y: left out", rel, orNone(o.KernelConfig)))
					continue
				}
				if m.unknownDeps {
					warn(fmt.Sprintf("module %s is compressed and there is no modules.dep: its dependencies are unknown (run depmod -b ROOT %s)", rel, release))
				}
			case strings.HasSuffix(rel, ".ko.gz"):
				rel = strings.TrimSuffix(rel, ".gz")
			}
			data, err := readModule(filepath.Join(dir, filepath.FromSlash(m.path)))
			if err != nil {
				return res, fmt.Errorf("module %s: %w", m.path, err)
			}
			mods = append(mods, entry{rel, data})
			res.Modules = append(res.Modules, rel)
		}
	}
	var ca []byte
	if o.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(o.CAFile); err != nil {
			return res, fmt.Errorf("CA file: %w", err)
		}
		if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
			return res, fmt.Errorf("CA file %s: no PEM certificate in it", o.CAFile)
		}
	}

	cw := &countWriter{w: w}
	zw, err := gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	if err != nil {
		return res, err
	}
	c := newCPIOWriter(zw)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "root", "lib/modules"} {
		if err := c.mkdirAll(d); err != nil {
			return res, err
		}
	}
	if err := c.charDev("dev/console", 0o600, 5, 1); err != nil {
		return res, err
	}
	if err := c.file("init", 0o755, o.Agent); err != nil {
		return res, err
	}
	if res.Release != "" {
		var order strings.Builder
		fmt.Fprintf(&order, "# lpmos initramfs: modules of kernel %s in load order (from %s)\n", res.Release, res.Index)
		for _, m := range mods {
			if err := c.file(path.Join(ModulesRoot, res.Release, m.rel), 0o644, m.data); err != nil {
				return res, err
			}
			order.WriteString(m.rel + "\n")
		}
		if err := c.file(OrderFile, 0o644, []byte(order.String())); err != nil {
			return res, err
		}
	}
	if ca != nil {
		if err := c.file(CAPath, 0o644, ca); err != nil {
			return res, err
		}
	}
	if err := c.close(); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}
	res.Size = cw.n
	return res, nil
}

// BuildFile builds the initramfs into path atomically (a temp file renamed
// into place), so a region serving path never sends half a file.
func BuildFile(dst string, o Options) (Result, error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	res, err := Build(tmp, o)
	if err != nil {
		tmp.Close()
		return res, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return res, fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}
	return res, nil
}

func orNone(s string) string {
	if s == "" {
		return "none given"
	}
	return s
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// KernelRelease reads the release string a bzImage carries in its setup
// header ("6.1.0-26-cloud-amd64 (debian-kernel@...) #1 SMP ..." -> the first
// word), so a region given only a kernel knows which modules belong to it.
func KernelRelease(kernelFile string) (string, error) {
	f, err := os.Open(kernelFile)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return "", fmt.Errorf("%s: not an x86 bzImage: %w", kernelFile, err)
	}
	if string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("%s: not an x86 bzImage (no HdrS setup header)", kernelFile)
	}
	off := int64(hdr[0x20e]) | int64(hdr[0x20f])<<8
	if off == 0 {
		return "", fmt.Errorf("%s: the kernel carries no version string", kernelFile)
	}
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, off+0x200)
	if n == 0 {
		return "", fmt.Errorf("%s: reading the version string: %w", kernelFile, err)
	}
	s := string(buf[:n])
	if i := strings.IndexAny(s, " \x00"); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "", fmt.Errorf("%s: empty version string", kernelFile)
	}
	return s, nil
}
