package app

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// modulesFixture is a tiny module tree with a modules.dep.
func modulesFixture(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib", "modules")
	rel := filepath.Join(dir, "6.1.0-t")
	for _, p := range []string{"kernel/virtio.ko", "kernel/virtio_net.ko"} {
		os.MkdirAll(filepath.Join(rel, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(rel, p), []byte("\x7fELF "+p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dep := "kernel/virtio.ko:\nkernel/virtio_net.ko: kernel/virtio.ko\n"
	if err := os.WriteFile(filepath.Join(rel, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func unpack(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInitramfsBuildCommand(t *testing.T) {
	t.Parallel()
	mods := modulesFixture(t)
	out := filepath.Join(t.TempDir(), "boot", "initramfs.img")
	// A stand-in agent: compressing the embedded one (8 MB) under -race
	// took most of this test's time; TestRegionBuildsMissingInitramfs
	// builds with the embedded agent.
	agent := filepath.Join(t.TempDir(), "lpmos-agent")
	const agentBody = "\x7fELF stand-in lpmos agent"
	if err := os.WriteFile(agent, []byte(agentBody), 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	root := NewRoot("test", &stdout, &stderr)
	root.SetArgs([]string{"initramfs", "build", "--modules-dir", mods, "--modules", "virtio_net,nosuch", "--agent", agent, "-o", out})
	if err := root.Execute(); err != nil {
		t.Fatalf("initramfs build: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"kernel 6.1.0-t, 2 modules", "kernel/virtio.ko\n  kernel/virtio_net.ko", "not in this kernel: nosuch"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	cpio := unpack(t, out)
	for _, want := range []string{"lib/modules/lpmos.order", "kernel/virtio.ko\nkernel/virtio_net.ko\n", "lib/modules/6.1.0-t/kernel/virtio_net.ko", "00000000init\x00", agentBody} {
		if !strings.Contains(cpio, want) {
			t.Errorf("initramfs lacks %q", want)
		}
	}

	root = NewRoot("test", io.Discard, io.Discard)
	root.SetArgs([]string{"initramfs", "build", "--modules-dir", mods, "--kernel-release", "5.0-other", "-o", out})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no modules of kernel 5.0-other") {
		t.Errorf("wrong release: %v", err)
	}
}

func TestRegionBuildsMissingInitramfs(t *testing.T) {
	t.Parallel()
	mods := modulesFixture(t)
	boot := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ro := regionalOptions{kernel: "vmlinuz", initrd: "initramfs.img", kernelModules: mods, kernelRelease: "6.1.0-t"}
	// No kernel yet: nothing to build, no error.
	if err := ensureInitramfs(boot, ro, log); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(boot, "initramfs.img")); err == nil {
		t.Fatal("built an initramfs without a kernel")
	}
	os.WriteFile(filepath.Join(boot, "vmlinuz"), []byte("kernel"), 0o644)
	if err := ensureInitramfs(boot, ro, log); err != nil {
		t.Fatal(err)
	}
	if cpio := unpack(t, filepath.Join(boot, "initramfs.img")); !strings.Contains(cpio, "kernel/virtio_net.ko") {
		t.Error("built initramfs lacks the modules")
	}
	// An existing initramfs is left alone.
	os.WriteFile(filepath.Join(boot, "initramfs.img"), []byte("mine"), 0o644)
	if err := ensureInitramfs(boot, ro, log); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(boot, "initramfs.img")); string(b) != "mine" {
		t.Error("an existing initramfs was replaced")
	}
}
