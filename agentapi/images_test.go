package agentapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/klauspost/compress/zstd"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/ulikunitz/xz"
)

const (
	tSector       = 512
	tPartStart    = 2048 * tSector
	tPartSectors  = 5120 // 2.5 MiB
	tImageSectors = 8192 // 4 MiB
)

// osImage builds a 4 MiB GPT disk image with one x86-64 root partition
// (ext4 with /etc/os-release and 256 KiB of random data), as image builders
// do, with sfdisk and mkfs.ext4. Small: every test that writes it encodes
// and decodes it under -race (pure-Go xz most of all), and the formats,
// the partition table and the file system are what the tests check, not
// the size.
func osImage(t *testing.T) (raw []byte, files map[string]string) {
	t.Helper()
	for tool, pkg := range map[string]string{"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "sfdisk": "fdisk"} {
		testenv.RequireTool(t, tool, pkg)
	}
	dir := t.TempDir()
	noise := make([]byte, 256<<10)
	rand.Read(noise)
	files = map[string]string{
		"etc/os-release": "ID=lpmostest\nVERSION_ID=1\n",
		"var/noise":      string(noise),
	}
	for name, content := range files {
		p := filepath.Join(dir, "root", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs := filepath.Join(dir, "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-d", filepath.Join(dir, "root"), fs, fmt.Sprintf("%dk", tPartSectors*tSector/1024)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, tImageSectors*tSector); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nstart=2048, size=%d, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n", tPartSectors))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	fsb, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	copy(raw[tPartStart:], fsb)
	return raw, files
}

// imageOnly serves just the image route of r, without the middleware the
// agent port wraps it in (agent credentials): these tests are about the
// bytes served.
func imageOnly(t *testing.T, r *Region) string {
	m := chi.NewRouter()
	m.Get(wire.PathImages+"{os}/{version}", r.serveImage)
	m.Head(wire.PathImages+"{os}/{version}", r.serveImage)
	return newHTTPServer(t, m)
}

// encodeImage writes raw in format (qcow2 through qemu-img).
func encodeImage(t *testing.T, format string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var zw interface {
		Write([]byte) (int, error)
		Close() error
	}
	var err error
	switch format {
	case imagesrc.Raw:
		return raw
	case imagesrc.Gzip:
		zw = gzip.NewWriter(&buf)
	case imagesrc.XZ:
		zw, err = xz.NewWriter(&buf)
	case imagesrc.Zstd:
		zw, err = zstd.NewWriter(&buf)
	case imagesrc.QCOW2:
		testenv.RequireTool(t, "qemu-img", "qemu-utils")
		dir := t.TempDir()
		in, out := filepath.Join(dir, "in.raw"), filepath.Join(dir, "out.qcow2")
		if err := os.WriteFile(in, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", in, out).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert: %v\n%s", err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	default:
		t.Fatalf("format %s", format)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestEachFormatWrittenByTheAgent: for every accepted format the image is
// inspected as `image add` does, the region serves it, and the agent's own
// installer (agent/install, --disk a regular file) writes it. The disk then
// holds the raw image: byte for byte outside the root partition (where the
// agent adds its cloud-init seed), and the root file system's files intact.
//
// Not parallel, nor its cases, nor TestAgentWritesTheDiskChosenBeforeApproval
// (the two tests whose agent mounts an ext4 root through a loop device):
// concurrent installs as root got EBUSY mounting the root file system.
func TestEachFormatWrittenByTheAgent(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	raw, files := osImage(t)
	imagesDir := t.TempDir()
	origin := newHTTPServer(t, http.FileServer(http.Dir(imagesDir)))
	policy := imagesrc.Policy{Dir: imagesDir, AllowLocalURLs: true} // the origin is on loopback
	r := newRegion(t, st, "dc1", func(c *Config) { c.Images = policy })
	images := imageOnly(t, r.Region)

	// Each format is encoded once, for its file and its URL case (xz of
	// the image under -race is most of the test's CPU), each case its own file.
	type encoding struct {
		once sync.Once
		data []byte
	}
	encoded := map[string]*encoding{}
	for _, format := range []string{"raw", "gzip", "xz", "zstd", "qcow2"} {
		encoded[format] = &encoding{}
	}
	encode := func(t *testing.T, format string) []byte {
		e := encoded[format]
		e.once.Do(func() { e.data = encodeImage(t, format, raw) })
		if e.data == nil {
			t.Fatalf("no %s encoding (it failed in the other case of this format)", format)
		}
		return e.data
	}
	for _, name := range []string{"raw", "gzip", "xz", "zstd", "qcow2", "xz-url", "zstd-url", "gzip-url"} {
		t.Run(name, func(t *testing.T) {
			format, viaURL := strings.CutSuffix(name, "-url")
			file := name + "." + format
			src := filepath.Join(imagesDir, file)
			if err := os.WriteFile(src, encode(t, format), 0o644); err != nil {
				t.Fatal(err)
			}
			if viaURL {
				src = origin + "/" + file
			}
			info, err := policy.Inspect(ctx, src, "lpmostest_"+name)
			if err != nil {
				t.Fatalf("inspect: %v", err)
			}
			img := store.Image{OSType: "lpmostest", OSVersion: name, Source: info.Source, Format: info.Format,
				AgentFormat: info.AgentFormat, Derived: info.Derived, SHA256: info.SHA256, Size: info.Size, FileSize: info.FileSize}
			if err := st.PutImage(ctx, img); err != nil {
				t.Fatal(err)
			}
			spec, reason, err := r.installSpec(ctx, store.Task{Spec: store.Spec{OSType: "lpmostest", OSVersion: name, Hostname: "h-" + name}})
			if err != nil || spec == nil {
				t.Fatalf("install spec: %v %s", err, reason)
			}
			if !strings.HasSuffix(spec.ImageURL, wire.PathImages+"lpmostest/"+name) {
				t.Fatalf("image URL %s", spec.ImageURL)
			}
			spec.ImageURL = images + wire.PathImages + "lpmostest/" + name
			if spec.ImageFormat != "raw" && spec.ImageFormat != "gzip" {
				t.Fatalf("the agent is sent format %q", spec.ImageFormat)
			}
			if spec.ImageSize != int64(len(raw)) {
				t.Fatalf("spec size %d, raw image %d", spec.ImageSize, len(raw))
			}

			disk := filepath.Join(t.TempDir(), "disk")
			if err := os.WriteFile(disk, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(disk, int64(len(raw))); err != nil {
				t.Fatal(err)
			}
			var lastBytes int64
			err = install.Install(ctx, *spec, install.Options{
				Disk: disk, TaskID: "task-" + name,
				Report: func(_ context.Context, p install.Progress) error {
					if p.Stage == wire.StageDownloading && p.BytesDone > 0 {
						lastBytes = p.BytesDone
					}
					return nil
				},
				Logger:      slog.New(slog.DiscardHandler),
				Backoff:     retry.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond},
				MaxFailures: 2, IdleTimeout: 10 * time.Second, ProgressInterval: time.Millisecond,
			})
			if err != nil {
				t.Fatalf("agent install: %v", err)
			}
			if lastBytes != int64(len(raw)) {
				t.Errorf("progress ended at %d bytes, want the %d disk bytes", lastBytes, len(raw))
			}
			got, err := os.ReadFile(disk)
			if err != nil {
				t.Fatal(err)
			}
			partEnd := tPartStart + tPartSectors*tSector
			if len(got) != len(raw) || !bytes.Equal(got[:tPartStart], raw[:tPartStart]) || !bytes.Equal(got[partEnd:], raw[partEnd:]) {
				t.Fatalf("the disk does not hold the raw image (outside the root partition)")
			}
			fs := filepath.Join(t.TempDir(), "fs")
			if err := os.WriteFile(fs, got[tPartStart:partEnd], 0o600); err != nil {
				t.Fatal(err)
			}
			for name, want := range files {
				out, err := exec.Command("debugfs", "-R", "cat /"+name, fs).Output()
				if err != nil || string(out) != want {
					t.Fatalf("root file system: /%s differs from the image's (%v)", name, err)
				}
			}
		})
	}
}

// An xz or zstd image without a converted file (a URL source, or a zstd
// file) is decompressed while served raw; a Range (the agent resuming) is
// answered by decompressing and skipping, with a strong ETag for If-Range.
func TestDecompressedImageServedWithRange(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	raw := make([]byte, 300_000)
	for i := range raw {
		raw[i] = byte(i / 1000)
	}
	imagesDir := t.TempDir()
	origin := newHTTPServer(t, http.FileServer(http.Dir(imagesDir)))
	r := newRegion(t, st, "dc1", func(c *Config) { c.Images = imagesrc.Policy{Dir: imagesDir, AllowLocalURLs: true} })
	images := imageOnly(t, r.Region)
	for _, format := range []string{imagesrc.XZ, imagesrc.Zstd} {
		file := filepath.Join(imagesDir, "d."+format)
		if err := os.WriteFile(file, encodeImage(t, format, raw), 0o644); err != nil {
			t.Fatal(err)
		}
		for ver, src := range map[string]string{format + "-file": file, format + "-url": origin + "/d." + format} {
			if err := st.PutImage(ctx, store.Image{OSType: "d", OSVersion: ver, Source: src, Format: format,
				AgentFormat: "raw", SHA256: sha256hex(raw), Size: int64(len(raw))}); err != nil {
				t.Fatal(err)
			}
			u := images + "/images/d/" + ver
			var etag string
			for _, tc := range []struct {
				rng       string
				ifRange   bool
				code      int
				from, end int
			}{
				{"", false, 200, 0, len(raw)},
				{"bytes=123456-", true, 206, 123456, len(raw)},
				{"bytes=1000-1999", false, 206, 1000, 2000},
				{"bytes=999999-", false, http.StatusRequestedRangeNotSatisfiable, 0, 0},
			} {
				req, _ := http.NewRequest("GET", u, nil)
				if tc.rng != "" {
					req.Header.Set("Range", tc.rng)
				}
				if tc.ifRange {
					req.Header.Set("If-Range", etag)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body := readAll(t, resp)
				resp.Body.Close()
				if resp.StatusCode != tc.code {
					t.Fatalf("%s %q: status %d, want %d", ver, tc.rng, resp.StatusCode, tc.code)
				}
				if tc.code < 300 && !bytes.Equal(body, raw[tc.from:tc.end]) {
					t.Fatalf("%s %q: wrong bytes (%d)", ver, tc.rng, len(body))
				}
				if tc.rng == "" {
					etag = resp.Header.Get("ETag")
					if etag == "" || strings.HasPrefix(etag, "W/") || resp.ContentLength != int64(len(raw)) {
						t.Fatalf("ETag %q, length %d", etag, resp.ContentLength)
					}
				}
			}
		}
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Entries written by an older version (or straight into etcd) are checked
// again when served: a local file outside the images directory, a symlink
// out of it, a loopback URL, a qcow2 recorded as raw. None is served, and
// a task for them fails before the agent touches the disk.
func TestServeRechecksTheCatalog(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	root := t.TempDir()
	imagesDir := filepath.Join(root, "images")
	pki := filepath.Join(root, "pki")
	for _, d := range []string{imagesDir, pki} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(pki, "ca.key")
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(key, filepath.Join(imagesDir, "key.img")); err != nil {
		t.Fatal(err)
	}
	qcowAsRaw := filepath.Join(imagesDir, "disk.img")
	if err := os.WriteFile(qcowAsRaw, []byte("QFI\xfb\x00\x00\x00\x03 a qcow2 recorded as raw by an older version"), 0o644); err != nil {
		t.Fatal(err)
	}
	origin := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("internal")) }))
	r := newRegion(t, st, "dc1", func(c *Config) { c.Images = imagesrc.Policy{Dir: imagesDir} })
	images := imageOnly(t, r.Region)
	sum := strings.Repeat("ab", 32)
	for ver, src := range map[string]string{
		"key":      key,
		"dotdot":   imagesDir + "/../pki/ca.key",
		"symlink":  filepath.Join(imagesDir, "key.img"),
		"loopback": origin + "/x",
		"metadata": "http://169.254.169.254/latest/meta-data/",
		"qcow2":    qcowAsRaw,
	} {
		if err := st.PutImage(ctx, store.Image{OSType: "old", OSVersion: ver, Source: src, Format: "raw", SHA256: sum, Size: 27}); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(images + "/images/old/" + ver)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte("PRIVATE")) || bytes.Contains(body, []byte("internal")) || bytes.Contains(body, []byte("QFI")) {
			t.Errorf("%s (%s): status %d, body %q", ver, src, resp.StatusCode, body)
		}
		spec, reason, err := r.installSpec(ctx, store.Task{Spec: store.Spec{OSType: "old", OSVersion: ver}})
		if err != nil || spec != nil || !strings.Contains(reason, "add it again") {
			t.Errorf("%s: install spec %v, reason %q, %v", ver, spec, reason, err)
		}
	}
}
