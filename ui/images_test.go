package ui_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/ulikunitz/xz"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeImage(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func imageBody(src string, extra string) string {
	b, _ := json.Marshal(src)
	return `{"os_type":"ubuntu","os_version":"24.04","source":` + string(b) + extra + `}`
}

// Every bad source is a 400 whose JSON error names the rule, and nothing
// enters the catalog.
func TestAddImageRefusesBadSources(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	unseedImage(t, e) // this test counts the catalog from empty
	root := filepath.Dir(e.imagesDir)
	disk := bytes.Repeat([]byte("disk"), 4096)
	good := writeImage(t, filepath.Join(e.imagesDir, "good.img"), disk)
	key := writeImage(t, filepath.Join(root, "pki", "ca.key"), []byte("-----BEGIN PRIVATE KEY-----"))
	if err := os.Symlink(key, filepath.Join(e.imagesDir, "key.img")); err != nil {
		t.Fatal(err)
	}
	vmdk := writeImage(t, filepath.Join(e.imagesDir, "disk.vmdk"), append([]byte("KDMV\x01\x00\x00\x00"), disk...))
	vmdkAsRaw := writeImage(t, filepath.Join(e.imagesDir, "disk.raw"), append([]byte("KDMV\x01\x00\x00\x00"), disk...))
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(disk) }))
	defer origin.Close()
	tests := []struct {
		name, body, rule string
	}{
		{"outside the images dir", imageBody(key, ""), "source-under-images-dir"},
		{"dot-dot out of it", imageBody(e.imagesDir+"/../pki/ca.key", ""), "source-under-images-dir"},
		{"symlink out of it", imageBody(filepath.Join(e.imagesDir, "key.img"), ""), "source-under-images-dir"},
		{"relative path", imageBody("good.img", ""), "source-under-images-dir"},
		{"missing file", imageBody(filepath.Join(e.imagesDir, "missing.img"), ""), "source-exists"},
		{"loopback URL", imageBody(origin.URL+"/img", ""), "url-address"},
		{"metadata URL", imageBody("http://169.254.169.254/latest/meta-data/", ""), "url-address"},
		{"ftp URL", imageBody("ftp://203.0.113.1/img", ""), "url-scheme"},
		{"non-hex sha256", imageBody(good, `,"sha256":"`+strings.Repeat("zz", 32)+`"`), "sha256-format"},
		{"short sha256", imageBody(good, `,"sha256":"abcd"`), "sha256-format"},
		{"negative size", imageBody(good, `,"size":-5`), "size-positive"},
		{"sha256 mismatch", imageBody(good, `,"sha256":"`+strings.Repeat("ab", 32)+`"`), "sha256-match"},
		{"size mismatch", imageBody(good, `,"size":17`), "size-match"},
		{"vmdk", imageBody(vmdk, ""), "format-supported"},
		{"vmdk named .raw", imageBody(vmdkAsRaw, ""), "format-supported"},
		{"no source", `{"os_type":"ubuntu","os_version":"24.04"}`, "source-given"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var apiErr wire.Error
			if code := e.do(t, "POST", "/api/v1/images", tc.body, &apiErr); code != 400 || !strings.HasPrefix(apiErr.Error, tc.rule+":") {
				t.Fatalf("status %d, error %q: want 400 naming rule %s", code, apiErr.Error, tc.rule)
			}
		})
	}
	var imgs []store.Image
	if code := e.do(t, "GET", "/api/v1/images", "", &imgs); code != 200 || len(imgs) != 0 {
		t.Fatalf("catalog after refusals: %d %+v", code, imgs)
	}
	// The right sha256 and size are accepted.
	var img store.Image
	if code := e.do(t, "POST", "/api/v1/images", imageBody(good, fmt.Sprintf(`,"sha256":"%s","size":%d`, strings.ToUpper(sum(disk)), len(disk))), &img); code != 201 || img.SHA256 != sum(disk) {
		t.Fatalf("add with matching sha256: %d %+v", code, img)
	}
}

func TestAddAndRemoveImages(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	unseedImage(t, e) // this test counts the catalog from empty
	ctx := context.Background()
	disk := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB: whole sectors
	var xzb bytes.Buffer
	zw, _ := xz.NewWriter(&xzb)
	zw.Write(disk)
	zw.Close()
	xzPath := writeImage(t, filepath.Join(e.imagesDir, "os.raw.xz"), xzb.Bytes())

	var img store.Image
	if code := e.do(t, "POST", "/api/v1/images", imageBody(xzPath, ""), &img); code != 201 {
		t.Fatalf("add xz: %d", code)
	}
	if img.Format != "xz" || img.AgentFormat != "gzip" || img.Derived == "" || img.Size != int64(len(disk)) || img.SHA256 != sum(disk) || img.FileSize != int64(xzb.Len()) {
		t.Fatalf("xz entry %+v", img)
	}
	xzDerived := img.Derived

	// qcow2: converted once into the derived directory, removed with the entry.
	testenv.RequireTool(t, "qemu-img", "qemu-utils")
	rawPath := writeImage(t, filepath.Join(t.TempDir(), "in.raw"), disk)
	q := filepath.Join(e.imagesDir, "os.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", rawPath, q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	body := `{"os_type":"debian","os_version":"12","source":"` + q + `"}`
	if code := e.do(t, "POST", "/api/v1/images", body, &img); code != 201 {
		t.Fatalf("add qcow2: %d", code)
	}
	if img.Format != "qcow2" || img.AgentFormat != "gzip" || img.SHA256 != sum(disk) || img.Derived == "" {
		t.Fatalf("qcow2 entry %+v", img)
	}
	first := img.Derived
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("derived file: %v", err)
	}
	// Replacing the entry with other bytes drops the old converted file.
	disk2 := bytes.Repeat([]byte("fedcba9876543210"), 8192)
	writeImage(t, rawPath, disk2)
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", rawPath, q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	if code := e.do(t, "POST", "/api/v1/images", body, &img); code != 201 || img.SHA256 != sum(disk2) {
		t.Fatalf("replace qcow2: %d %+v", code, img)
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Errorf("old converted file still there: %v", err)
	}

	// An active task holds its image: 409 naming the task.
	task, err := e.store.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:00:09", OSType: "debian", OSVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	var apiErr wire.Error
	if code := e.do(t, "DELETE", "/api/v1/images/debian/12", "", &apiErr); code != 409 || !strings.Contains(apiErr.Error, task.ID) {
		t.Fatalf("delete in use: %d %q", code, apiErr.Error)
	}
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID, "", nil); code >= 300 {
		t.Fatalf("cancel: %d", code)
	}
	var removed store.Image
	if code := e.do(t, "DELETE", "/api/v1/images/debian/12", "", &removed); code != 200 || removed.OSType != "debian" {
		t.Fatalf("delete: %d %+v", code, removed)
	}
	if _, err := os.Stat(img.Derived); !os.IsNotExist(err) {
		t.Errorf("converted file left after delete: %v", err)
	}
	if _, err := os.Stat(q); err != nil {
		t.Errorf("the operator's source file was removed: %v", err)
	}
	if code := e.do(t, "DELETE", "/api/v1/images/debian/12", "", &apiErr); code != 404 {
		t.Fatalf("delete again: %d %q", code, apiErr.Error)
	}
	if code := e.do(t, "DELETE", "/api/v1/images/ubuntu/24.04", "", nil); code != 200 {
		t.Fatalf("delete xz: %d", code)
	}
	if _, err := os.Stat(xzDerived); !os.IsNotExist(err) {
		t.Errorf("converted xz file left after delete: %v", err)
	}
	var imgs []store.Image
	if e.do(t, "GET", "/api/v1/images", "", &imgs); len(imgs) != 0 {
		t.Fatalf("catalog not empty: %+v", imgs)
	}
}
