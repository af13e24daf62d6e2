package initramfs

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/pid1"
)

// cpioEntry is one entry read back by readCPIO.
type cpioEntry struct {
	name         string
	mode         uint32
	uid, gid     uint32
	mtime        uint32
	rmaj, rmin   uint32
	data         []byte
	ino, nlink   uint32
	headerOffset int
}

// readCPIO is an independent newc reader: it checks the magic, the 4-byte
// alignment of names and data, and stops at the trailer (which must be last).
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("entry at %d: field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 {
			t.Fatalf("entry at %d is not 4-byte aligned", off)
		}
		if len(b) < off+110 {
			t.Fatalf("archive ends at %d without a trailer", len(b))
		}
		if magic := string(b[off : off+6]); magic != "070701" {
			t.Fatalf("entry at %d: magic %q", off, magic)
		}
		e := cpioEntry{
			ino: field(0), mode: field(1), uid: field(2), gid: field(3), nlink: field(4), mtime: field(5),
			rmaj: field(9), rmin: field(10), headerOffset: off,
		}
		size, namesize := int(field(6)), int(field(11))
		if check := field(12); check != 0 {
			t.Errorf("entry at %d: check field %d", off, check)
		}
		nameStart := off + 110
		if b[nameStart+namesize-1] != 0 {
			t.Fatalf("entry at %d: name not NUL-terminated", off)
		}
		e.name = string(b[nameStart : nameStart+namesize-1])
		dataStart := (nameStart + namesize + 3) &^ 3
		e.data = b[dataStart : dataStart+size]
		off = (dataStart + size + 3) &^ 3
		if e.name == "TRAILER!!!" {
			if off != len(b) && len(bytes.Trim(b[off:], "\x00")) != 0 {
				t.Fatalf("data after the trailer")
			}
			return out
		}
		out = append(out, e)
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeModule is a minimal ELF64 relocatable with a .modinfo section, enough
// for debug/elf and the modinfo fallback.
func fakeModule(name string, deps ...string) []byte {
	modinfo := []byte(fmt.Sprintf("license=GPL\x00depends=%s\x00name=%s\x00vermagic=6.1.0-test SMP mod_unload\x00", strings.Join(deps, ","), name))
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	le := binary.LittleEndian
	var b bytes.Buffer
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01\x01")
	le.PutUint16(hdr[16:], 1)  // ET_REL
	le.PutUint16(hdr[18:], 62) // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	shoff := 64 + len(modinfo) + len(shstr)
	shoff = (shoff + 7) &^ 7
	le.PutUint64(hdr[40:], uint64(shoff))
	le.PutUint16(hdr[52:], 64)
	le.PutUint16(hdr[58:], 64)
	le.PutUint16(hdr[60:], 3)
	le.PutUint16(hdr[62:], 2)
	b.Write(hdr)
	b.Write(modinfo)
	b.Write(shstr)
	b.Write(make([]byte, shoff-b.Len()))
	sh := func(name, typ uint32, off, size int) {
		s := make([]byte, 64)
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
		b.Write(s)
	}
	sh(0, 0, 0, 0)
	sh(1, 1, 64, len(modinfo))             // .modinfo, PROGBITS
	sh(10, 3, 64+len(modinfo), len(shstr)) // .shstrtab, STRTAB
	return b.Bytes()
}

const release = "6.1.0-test-amd64"

// fixture writes a module tree shaped like Debian's cloud kernel: each
// module's file holds a fake ELF whose depends= matches modules.dep.
func fixture(t *testing.T, withDep bool) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib", "modules", release)
	mods := []struct {
		path string
		deps []string
	}{
		{"kernel/drivers/virtio/virtio_ring.ko", nil},
		{"kernel/drivers/virtio/virtio.ko", []string{"virtio_ring"}},
		{"kernel/drivers/virtio/virtio_pci_modern_dev.ko", nil},
		{"kernel/drivers/virtio/virtio_pci_legacy_dev.ko", nil},
		{"kernel/drivers/virtio/virtio_pci.ko", []string{"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"}},
		{"kernel/net/core/failover.ko", nil},
		{"kernel/drivers/net/net_failover.ko", []string{"failover"}},
		{"kernel/drivers/net/virtio_net.ko", []string{"virtio_ring", "virtio", "net_failover"}},
		{"kernel/drivers/block/virtio_blk.ko", []string{"virtio", "virtio_ring"}},
		{"kernel/drivers/scsi/scsi_common.ko", nil},
		{"kernel/drivers/scsi/scsi_mod.ko", []string{"scsi_common"}},
		{"kernel/drivers/scsi/sd_mod.ko", []string{"scsi_mod", "scsi_common"}},
		{"kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.gz", nil},
		{"kernel/drivers/net/ethernet/intel/igb/igb.ko.xz", []string{"dca"}},
		{"kernel/drivers/dca/dca.ko.xz", nil},
		{"kernel/drivers/unrelated/big.ko", nil},
	}
	for _, m := range mods {
		p := filepath.Join(dir, m.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := fakeModule(modName(m.path), m.deps...)
		if strings.HasSuffix(m.path, ".gz") {
			data = gz(t, data)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if withDep {
		// depmod's format: every dependency (transitive), in an order that
		// loads correctly from last to first.
		dep := `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.gz:
kernel/drivers/net/ethernet/intel/igb/igb.ko.xz: kernel/drivers/dca/dca.ko.xz
kernel/drivers/dca/dca.ko.xz:
kernel/drivers/unrelated/big.ko:
`
		if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	builtin := "kernel/fs/ext4/ext4.ko\nkernel/drivers/nvme/host/nvme.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func build(t *testing.T, o Options) (Result, []cpioEntry, []string) {
	t.Helper()
	var warnings []string
	o.Warn = func(m string) { warnings = append(warnings, m) }
	var buf bytes.Buffer
	res, err := Build(&buf, o)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.Size != int64(buf.Len()) {
		t.Errorf("Size = %d, wrote %d", res.Size, buf.Len())
	}
	return res, readCPIO(t, gunzip(t, buf.Bytes())), warnings
}

func entries(es []cpioEntry) map[string]cpioEntry {
	m := map[string]cpioEntry{}
	for _, e := range es {
		m[e.name] = e
	}
	return m
}

// The builder writes where agent/pid1 reads.
func TestPathsMatchTheAgent(t *testing.T) {
	if OrderFile != pid1.ModuleOrderFile || ModulesRoot != pid1.ModuleDir {
		t.Fatalf("builder writes %s under %s, agent reads %s under %s", OrderFile, ModulesRoot, pid1.ModuleOrderFile, pid1.ModuleDir)
	}
}

func TestBuildLoadOrderFromModulesDep(t *testing.T) {
	for _, withDep := range []bool{true, false} {
		t.Run(map[bool]string{true: "modules.dep", false: "modinfo"}[withDep], func(t *testing.T) {
			root := fixture(t, withDep)
			agent := []byte("\x7fELF fake agent")
			res, es, warnings := build(t, Options{
				Agent:      agent,
				ModulesDir: filepath.Join(root, "lib", "modules"),
				Modules:    []string{"virtio_pci", "virtio_net", "virtio_blk", "sd_mod", "e1000e", "igb", "ext4", "nvme", "ice"},
			})
			wantIndex := map[bool]string{true: "modules.dep", false: "modinfo"}[withDep]
			if res.Release != release || res.Index != wantIndex {
				t.Errorf("release %q index %q", res.Release, res.Index)
			}
			want := []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
				"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
				"kernel/drivers/virtio/virtio_pci.ko",
				"kernel/net/core/failover.ko",
				"kernel/drivers/net/net_failover.ko",
				"kernel/drivers/net/virtio_net.ko",
				"kernel/drivers/block/virtio_blk.ko",
				"kernel/drivers/scsi/scsi_common.ko",
				"kernel/drivers/scsi/scsi_mod.ko",
				"kernel/drivers/scsi/sd_mod.ko",
				"kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", // gunzipped
			}
			if !withDep {
				// .modinfo lists direct dependencies in another order; any
				// order with every module after its dependencies is right.
				want[2], want[3] = want[3], want[2]
			}
			if !reflect.DeepEqual(res.Modules, want) {
				t.Errorf("load order:\n got %q\nwant %q", res.Modules, want)
			}
			if !reflect.DeepEqual(res.Builtin, []string{"ext4", "nvme"}) || !reflect.DeepEqual(res.Missing, []string{"ice"}) {
				t.Errorf("builtin %v missing %v", res.Builtin, res.Missing)
			}
			// igb.ko.xz (and, per modules.dep, its dependency dca.ko.xz) is
			// left out: no kernel config says the kernel can decompress.
			wantSkipped := map[bool]int{true: 2, false: 1}[withDep]
			if len(res.Skipped) != wantSkipped || !strings.Contains(strings.Join(warnings, "\n"), "igb.ko.xz is compressed") {
				t.Errorf("skipped %v, warnings %q", res.Skipped, warnings)
			}

			m := entries(es)
			order := string(m[strings.TrimPrefix(OrderFile, "/")].data)
			if got := pid1.ParseModuleOrder([]byte(order)); !reflect.DeepEqual(got, want) {
				t.Errorf("%s as the agent reads it:\n got %q\nwant %q", OrderFile, got, want)
			}
			for _, p := range want {
				e, ok := m["lib/modules/"+release+"/"+p]
				if !ok {
					t.Errorf("%s not in the archive", p)
					continue
				}
				if !bytes.HasPrefix(e.data, []byte("\x7fELF")) || e.mode != modeFile|0o644 {
					t.Errorf("%s: mode %o, data %q...", p, e.mode, e.data[:4])
				}
			}
			if _, ok := m["lib/modules/"+release+"/kernel/drivers/unrelated/big.ko"]; ok {
				t.Error("a module nobody wanted is in the archive")
			}
			if e := m["init"]; !bytes.Equal(e.data, agent) || e.mode != modeFile|0o755 {
				t.Errorf("/init: mode %o, %d bytes", e.mode, len(e.data))
			}
			if e := m["dev/console"]; e.mode != modeChar|0o600 || e.rmaj != 5 || e.rmin != 1 {
				t.Errorf("/dev/console: mode %o rdev %d:%d", e.mode, e.rmaj, e.rmin)
			}
			// Every entry's parents come before it; owners and times are 0.
			seen := map[string]bool{}
			inos := map[uint32]bool{}
			for _, e := range es {
				if dir := filepath.Dir(e.name); dir != "." && !seen[dir] {
					t.Errorf("%s comes before its directory %s", e.name, dir)
				}
				seen[e.name] = true
				if e.uid != 0 || e.gid != 0 || e.mtime != 0 {
					t.Errorf("%s: uid %d gid %d mtime %d", e.name, e.uid, e.gid, e.mtime)
				}
				if inos[e.ino] {
					t.Errorf("%s: inode %d reused", e.name, e.ino)
				}
				inos[e.ino] = true
			}
		})
	}
}

func TestBuildCompressedModulesWithKernelSupport(t *testing.T) {
	root := fixture(t, true)
	cfg := filepath.Join(root, "config")
	os.WriteFile(cfg, []byte("CONFIG_MODULES=y\nCONFIG_MODULE_DECOMPRESS=y\n"), 0o644)
	res, es, warnings := build(t, Options{Agent: []byte("x"), ModulesDir: filepath.Join(root, "lib", "modules", release), Modules: []string{"igb"}, KernelConfig: cfg})
	want := []string{"kernel/drivers/dca/dca.ko.xz", "kernel/drivers/net/ethernet/intel/igb/igb.ko.xz"}
	if !reflect.DeepEqual(res.Modules, want) || len(warnings) != 0 || len(res.Skipped) != 0 {
		t.Errorf("modules %q skipped %q warnings %q", res.Modules, res.Skipped, warnings)
	}
	if _, ok := entries(es)["lib/modules/"+release+"/"+want[1]]; !ok {
		t.Error("igb.ko.xz not in the archive")
	}
}

func TestBuildIsReproducibleAndAgentOnly(t *testing.T) {
	root := fixture(t, true)
	o := Options{Agent: []byte("agent"), ModulesDir: filepath.Join(root, "lib", "modules")}
	var a, b bytes.Buffer
	if _, err := Build(&a, o); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(&b, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two builds of the same input differ")
	}
	res, es, _ := build(t, Options{Agent: []byte("agent")})
	if res.Release != "" || len(res.Modules) != 0 {
		t.Errorf("agent-only build: %+v", res)
	}
	if _, ok := entries(es)[strings.TrimPrefix(OrderFile, "/")]; ok {
		t.Error("agent-only build has a module order file")
	}
}

func TestBuildCAFile(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	pem := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	os.WriteFile(ca, []byte(pem), 0o644)
	_, es, _ := build(t, Options{Agent: []byte("a"), CAFile: ca})
	if got := string(entries(es)[strings.TrimPrefix(CAPath, "/")].data); got != pem {
		t.Errorf("CA bundle = %q", got)
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("hello"), 0o644)
	if _, err := Build(io.Discard, Options{Agent: []byte("a"), CAFile: bad}); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Errorf("bad CA file: %v", err)
	}
}

func TestBuildErrors(t *testing.T) {
	root := fixture(t, true)
	mods := filepath.Join(root, "lib", "modules")
	for name, o := range map[string]Options{
		"no agent":        {ModulesDir: mods},
		"wrong release":   {Agent: []byte("a"), ModulesDir: mods, Release: "5.10.0-other"},
		"no modules tree": {Agent: []byte("a"), ModulesDir: t.TempDir()},
	} {
		if _, err := Build(io.Discard, o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// A dependency that is neither a module nor built in names the chain.
	dir := filepath.Join(mods, release)
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/a.ko: kernel/b.ko\n"), 0o644)
	_, err := Build(io.Discard, Options{Agent: []byte("a"), ModulesDir: mods, Modules: []string{"a"}})
	if err == nil || !strings.Contains(err.Error(), "module b (needed by a)") {
		t.Errorf("missing dependency: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("not a dep line\n"), 0o644)
	if _, err := Build(io.Discard, Options{Agent: []byte("a"), ModulesDir: mods}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad modules.dep: %v", err)
	}
}

func TestFindRelease(t *testing.T) {
	root := fixture(t, true)
	mods := filepath.Join(root, "lib", "modules")
	for _, c := range []struct{ dir, rel string }{{mods, ""}, {mods, release}, {filepath.Join(mods, release), ""}, {filepath.Join(mods, release), release}} {
		dir, rel, err := FindRelease(c.dir, c.rel)
		if err != nil || rel != release || dir != filepath.Join(mods, release) {
			t.Errorf("FindRelease(%s, %q) = %s, %s, %v", c.dir, c.rel, dir, rel, err)
		}
	}
	os.MkdirAll(filepath.Join(mods, "6.2.0-other", "kernel"), 0o755)
	if _, _, err := FindRelease(mods, ""); err == nil || !strings.Contains(err.Error(), "--kernel-release") {
		t.Errorf("two releases: %v", err)
	}
}

func TestKernelRelease(t *testing.T) {
	img := make([]byte, 0x4000)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x3000-0x200)
	copy(img[0x3000:], "6.1.0-26-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\x00")
	p := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(p, img, 0o644)
	if got, err := KernelRelease(p); err != nil || got != "6.1.0-26-cloud-amd64" {
		t.Errorf("KernelRelease = %q, %v", got, err)
	}
	os.WriteFile(p, make([]byte, 0x400), 0o644)
	if _, err := KernelRelease(p); err == nil || !strings.Contains(err.Error(), "bzImage") {
		t.Errorf("not a bzImage: %v", err)
	}
}
