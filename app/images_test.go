package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// TestImageCatalogAgainstServe: `lpmos image add/list/rm` and direct API
// calls against a real `lpmos serve` child with --images-dir.
func TestImageCatalogAgainstServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imagesDir := filepath.Join(t.TempDir(), "imgs")
	p := startServe(t, dir, "--images-dir", imagesDir)
	p.waitHealthy(t, 30*time.Second)
	if st, err := os.Stat(imagesDir); err != nil || st.Mode().Perm() != 0o755 || !st.IsDir() {
		t.Fatalf("images dir not created 0755: %v %v", st, err)
	}
	disk := bytes.Repeat([]byte("lpmos disk\n"), 50_000)

	// An unknown container is refused, whatever its name, and not written.
	vmdk := filepath.Join(imagesDir, "disk.raw")
	if err := os.WriteFile(vmdk, append([]byte("KDMV\x01\x00\x00\x00"), disk...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := p.cli(t, "image", "add", "ubuntu", "24.04", vmdk)
	if err == nil || !strings.Contains(err.Error(), "VMDK") || !strings.Contains(err.Error(), "qemu-img convert -O raw") || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("image add of a VMDK: %v", err)
	}
	if out, err := p.cli(t, "image", "list", "-o", "json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("catalog after the refusal: %q %v", out, err)
	}

	// The API refuses the attacks of issue 11 itself (not only the CLI).
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", p.url+"/api/v1/images", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+p.token(t))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "pki", "*.key"))
	if len(keys) == 0 {
		t.Fatalf("no key in %s/pki to attack with", dir)
	}
	for _, tc := range []struct{ body, rule string }{
		{`{"os_type":"x","os_version":"1","source":"` + keys[0] + `"}`, "source-under-images-dir"},
		{`{"os_type":"x","os_version":"1","source":"` + imagesDir + `/../../` + filepath.Base(dir) + `/admin.token"}`, "source-under-images-dir"},
		{`{"os_type":"x","os_version":"1","source":"` + p.url + `/api/v1/health"}`, "url-address"},
		{`{"os_type":"x","os_version":"1","source":"` + filepath.Join(imagesDir, "nope.img") + `"}`, "source-exists"},
		{`{"os_type":"x","os_version":"1","source":"` + vmdk + `","sha256":"` + strings.Repeat("g", 64) + `"}`, "sha256-format"},
		{`{"os_type":"x","os_version":"1","source":"` + vmdk + `","size":-5}`, "size-positive"},
	} {
		if code, msg := post(tc.body); code != 400 || !strings.HasPrefix(msg, tc.rule+":") {
			t.Errorf("%s: %d %q, want 400 naming %s", tc.body, code, msg, tc.rule)
		}
	}

	// xz is accepted; the catalog says what the agent receives (gzip: a
	// local xz is converted once).
	var buf bytes.Buffer
	zw, _ := xz.NewWriter(&buf)
	zw.Write(disk)
	zw.Close()
	xzPath := filepath.Join(imagesDir, "ubuntu.img.xz")
	if err := os.WriteFile(xzPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := p.cli(t, "image", "add", "ubuntu", "24.04", xzPath, "--size", fmt.Sprint(len(disk)))
	if err != nil {
		t.Fatalf("image add xz: %v", err)
	}
	if !strings.Contains(out, "xz") || !strings.Contains(out, "gzip") || !strings.Contains(out, fmt.Sprint(len(disk))) {
		t.Errorf("image add output:\n%s", out)
	}
	if _, err := p.cli(t, "image", "add", "ubuntu", "25.04", xzPath, "--sha256", strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "sha256-match") {
		t.Errorf("wrong --sha256: %v", err)
	}
	if out, err := p.cli(t, "image", "rm", "ubuntu", "24.04"); err != nil || !strings.Contains(out, "removed ubuntu 24.04") {
		t.Fatalf("image rm: %q %v", out, err)
	}
	if _, err := p.cli(t, "image", "rm", "ubuntu", "24.04"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("image rm of a missing image: %v", err)
	}
	if _, err := os.Stat(xzPath); err != nil {
		t.Errorf("image rm removed the source file: %v", err)
	}
}
