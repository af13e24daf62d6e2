package imagesrc

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"github.com/lpmos/lpmos/internal/testenv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// diskBytes is a raw "disk": compressible but not trivial, with a
// partition-table-like start.
func diskBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i / 4096 * 7)
		if i%4096 < 64 {
			b[i] = byte(i * 131)
		}
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Encode compresses raw into format (raw, gzip, xz, zstd; qcow2 through
// qemu-img) for tests of the packages that serve images.
func encode(t testing.TB, format string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch format {
	case Raw:
		return raw
	case Gzip:
		zw := gzip.NewWriter(&buf)
		zw.Write(raw)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	case XZ:
		zw, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(raw)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	case Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(raw)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	case QCOW2:
		return qcow2Of(t, raw)
	default:
		t.Fatalf("encode %s", format)
	}
	return buf.Bytes()
}

func qcow2Of(t testing.TB, raw []byte) []byte {
	t.Helper()
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
}

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantRule(t *testing.T, err error, rule string, words ...string) {
	t.Helper()
	var re *RuleError
	if !errors.As(err, &re) {
		t.Fatalf("error %v: want a refusal by rule %s", err, rule)
	}
	if re.Rule != rule {
		t.Fatalf("rule %q (%v), want %q", re.Rule, err, rule)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err, w)
		}
	}
}

func TestSniff(t *testing.T) {
	at := func(off int, magic string) []byte {
		b := make([]byte, SniffLen)
		copy(b[off:], magic)
		return b
	}
	tests := []struct {
		name   string
		head   []byte
		format string
		refuse []string // words of the refusal
	}{
		{"raw MBR", diskBytes(SniffLen), Raw, nil},
		{"short raw", []byte("x"), Raw, nil},
		{"empty", nil, Raw, nil},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, Gzip, nil},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, XZ, nil},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0}, Zstd, nil},
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), QCOW2, nil},
		{"vmdk", []byte("KDMV\x01\x00\x00\x00"), "", []string{"VMDK", "qemu-img convert -O raw"}},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nversion=1"), "", []string{"VMDK", "qemu-img convert"}},
		{"vhdx", []byte("vhdxfile\x00\x00"), "", []string{"VHDX", "qemu-img convert -O raw"}},
		{"vhd", []byte("conectix\x00\x00"), "", []string{"VHD", "qemu-img convert"}},
		{"vdi", at(0x40, "\x7f\x10\xda\xbe"), "", []string{"VDI", "qemu-img convert"}},
		{"bzip2", []byte("BZh91AY&SY"), "", []string{"bzip2", "bunzip2"}},
		{"zip", []byte("PK\x03\x04\x14\x00"), "", []string{"zip", "unzip"}},
		{"7z", []byte("7z\xbc\xaf\x27\x1c\x00\x04"), "", []string{"7-Zip"}},
		{"lz4", []byte("\x04\x22\x4d\x18\x64"), "", []string{"lz4"}},
		{"tar", at(257, "ustar\x0000"), "", []string{"tar"}},
		{"iso9660", at(0x8001, "CD001"), "", []string{"ISO 9660"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Sniff(tc.head)
			if tc.refuse != nil {
				wantRule(t, err, "format-supported", tc.refuse...)
				return
			}
			if err != nil || got != tc.format {
				t.Fatalf("Sniff = %q, %v; want %q", got, err, tc.format)
			}
		})
	}
}

func TestInspectFormats(t *testing.T) {
	raw := diskBytes(3<<20 + 1536) // whole sectors: qemu-img rounds up
	ctx := context.Background()
	tests := []struct {
		format  string
		url     bool
		agent   string
		derived bool
	}{
		{Raw, false, Raw, false},
		{Gzip, false, Gzip, false},
		{XZ, false, Gzip, true}, // converted once: pure-Go xz is slower than the wire
		{Zstd, false, Raw, false},
		{QCOW2, false, Gzip, true},
		{Raw, true, Raw, false},
		{Gzip, true, Gzip, false},
		{XZ, true, Raw, false}, // a URL is decompressed by the region while serving
		{Zstd, true, Raw, false},
	}
	for _, tc := range tests {
		name := tc.format
		if tc.url {
			name += " URL"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := Policy{Dir: dir, AllowLocalURLs: true}
			data := encode(t, tc.format, raw)
			src := write(t, dir, "disk."+tc.format, data)
			if tc.url {
				origin := httptest.NewServer(http.FileServer(http.Dir(dir)))
				defer origin.Close()
				src = origin.URL + "/disk." + tc.format
			}
			info, err := p.Inspect(ctx, src, "os_1")
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if info.Format != tc.format || info.SHA256 != hexSum(raw) || info.Size != int64(len(raw)) || info.FileSize != int64(len(data)) {
				t.Fatalf("info %+v: want format %s, %d disk bytes, sha256 %s, file %d bytes", info, tc.format, len(raw), hexSum(raw), len(data))
			}
			if info.AgentFormat != tc.agent {
				t.Errorf("agent format %q, want %q", info.AgentFormat, tc.agent)
			}
			if !tc.derived {
				if info.Derived != "" {
					t.Errorf("derived %q for %s", info.Derived, name)
				}
				return
			}
			// The converted file is gzip of the raw bytes, in the derived dir.
			if filepath.Dir(info.Derived) != filepath.Join(dir, DerivedDir) {
				t.Fatalf("derived file %q not in %s", info.Derived, DerivedDir)
			}
			f, err := os.Open(info.Derived)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			zr, err := gzip.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("derived file holds %d bytes (%v), not the raw image", len(got), err)
			}
			left, _ := filepath.Glob(filepath.Join(dir, DerivedDir, "*.tmp"))
			if len(left) != 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}

func TestInspectRefuses(t *testing.T) {
	ctx := context.Background()
	raw := diskBytes(1 << 20)
	dir := t.TempDir()
	p := Policy{Dir: dir}
	truncated := func(format string) []byte {
		b := encode(t, format, raw)
		return b[:len(b)*2/3]
	}
	flipped := func(format string) []byte {
		b := bytes.Clone(encode(t, format, raw))
		b[len(b)/2] ^= 0xff
		return b
	}
	qcowBacking := bytes.Clone(encode(t, QCOW2, raw))
	binary.BigEndian.PutUint64(qcowBacking[8:], 512) // backing_file_offset
	qcowExternal := bytes.Clone(encode(t, QCOW2, raw))
	binary.BigEndian.PutUint64(qcowExternal[72:], 1<<2) // external data file
	tests := []struct {
		name  string
		data  []byte
		rule  string
		words []string
	}{
		{"truncated gzip", truncated(Gzip), "stream-intact", []string{"gzip"}},
		{"truncated xz", truncated(XZ), "stream-intact", []string{"xz"}},
		{"truncated zstd", truncated(Zstd), "stream-intact", []string{"zstd"}},
		{"corrupt gzip", flipped(Gzip), "stream-intact", []string{"gzip"}},
		{"corrupt xz", flipped(XZ), "stream-intact", []string{"xz"}},
		{"corrupt zstd", flipped(Zstd), "stream-intact", []string{"zstd"}},
		{"qcow2 in xz", encode(t, XZ, encode(t, QCOW2, raw)), "format-supported", []string{"xz", "qcow2"}},
		{"vmdk in gzip", encode(t, Gzip, []byte("KDMV\x01\x00\x00\x00")), "format-supported", []string{"gzip", "VMDK"}},
		{"vmdk", []byte("KDMV\x01\x00\x00\x00rest"), "format-supported", []string{"VMDK", "qemu-img convert -O raw"}},
		{"qcow2 with a backing file", qcowBacking, "qcow2-standalone", []string{"backing file"}},
		{"qcow2 with an external data file", qcowExternal, "qcow2-standalone", []string{"external"}},
		{"empty", nil, "source-not-empty", nil},
		{"empty xz", encode(t, XZ, nil), "source-not-empty", nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := write(t, dir, "img"+strconv.Itoa(i), tc.data)
			_, err := p.Inspect(ctx, src, "os_1")
			wantRule(t, err, tc.rule, tc.words...)
		})
	}
	if left, _ := filepath.Glob(filepath.Join(dir, DerivedDir, "*")); len(left) != 0 {
		t.Errorf("refused images left files behind: %v", left)
	}
}

func TestQCOW2URLRefused(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "d.qcow2", encode(t, QCOW2, diskBytes(1<<16)))
	origin := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer origin.Close()
	_, err := Policy{Dir: dir, AllowLocalURLs: true}.Inspect(context.Background(), origin.URL+"/d.qcow2", "os_1")
	wantRule(t, err, "format-supported", "download")
}

func TestQCOW2WithoutQemuImg(t *testing.T) {
	dir := t.TempDir()
	p := Policy{Dir: dir, QemuImg: "lpmos-no-such-qemu-img"}
	src := write(t, dir, "d.qcow2", encode(t, QCOW2, diskBytes(1<<16)))
	_, err := p.Inspect(context.Background(), src, "os_1")
	wantRule(t, err, "format-supported", "qemu-utils")
}

func TestLocalPath(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "images")
	outside := filepath.Join(root, "pki")
	for _, d := range []string{filepath.Join(dir, "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	good := write(t, dir, "good.img", []byte("disk"))
	write(t, filepath.Join(dir, "sub"), "nested.img", []byte("disk"))
	key := write(t, outside, "ca.key", []byte("secret"))
	if err := os.Symlink(key, filepath.Join(dir, "link-to-key.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(good, filepath.Join(root, "outside-link.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "pkidir")); err != nil {
		t.Fatal(err)
	}
	// The images dir itself reached through a symlink is fine.
	if err := os.Symlink(dir, filepath.Join(root, "images-link")); err != nil {
		t.Fatal(err)
	}
	p := Policy{Dir: filepath.Join(root, "images-link")}
	tests := []struct {
		src  string
		rule string // "" = accepted
	}{
		{good, ""},
		{filepath.Join(dir, "sub", "nested.img"), ""},
		{filepath.Join(root, "outside-link.img"), ""}, // resolves into the dir
		{key, "source-under-images-dir"},
		{filepath.Join(dir, "..", "pki", "ca.key"), "source-under-images-dir"},
		{filepath.Join(dir, "link-to-key.img"), "source-under-images-dir"},
		{filepath.Join(dir, "pkidir", "ca.key"), "source-under-images-dir"},
		{dir, "source-under-images-dir"},
		{filepath.Join(dir, "sub"), "source-exists"},
		{filepath.Join(dir, "missing.img"), "source-exists"},
		{"good.img", "source-under-images-dir"},
		{"/etc/passwd", "source-under-images-dir"},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			got, err := p.LocalPath(tc.src)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !strings.HasPrefix(got, dir) {
					t.Errorf("resolved to %s", got)
				}
				return
			}
			wantRule(t, err, tc.rule)
		})
	}
	if _, err := (Policy{}).LocalPath(good); err == nil {
		t.Error("a policy without images dir accepted a local file")
	}
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	p := Policy{OwnPorts: []int{8080, 8081}}
	tests := []struct {
		url  string
		rule string // "" = accepted
	}{
		{"http://203.0.113.7/img.raw", ""},
		{"https://198.51.100.1:8443/img.xz", ""},
		{"http://10.0.0.5/img.raw", ""}, // a private mirror is a normal place for images
		{"http://127.0.0.1:8080/api/v1/images", "url-address"},
		{"http://localhost/img", "url-address"},
		{"http://[::1]/img", "url-address"},
		{"http://169.254.169.254/latest/meta-data/", "url-address"},
		{"http://[fe80::1]/img", "url-address"},
		{"http://0.0.0.0/img", "url-address"},
		{"http://224.0.0.1/img", "url-address"},
		{"http://[::ffff:127.0.0.1]/img", "url-address"},
		{"ftp://203.0.113.7/img", "url-scheme"},
		{"file:///etc/passwd", "url-scheme"},
		{"http:///img", "url-valid"},
		{"http://203.0.113.7:99999/img", "url-valid"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			_, err := p.CheckURL(ctx, tc.url)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantRule(t, err, tc.rule)
		})
	}

	// With the allow flag loopback is fine, the node's own ports are not.
	allow := Policy{AllowLocalURLs: true, OwnPorts: []int{8080}}
	if _, err := allow.CheckURL(ctx, "http://127.0.0.1:9000/img"); err != nil {
		t.Errorf("allowed loopback refused: %v", err)
	}
	_, err := allow.CheckURL(ctx, "http://127.0.0.1:8080/img")
	wantRule(t, err, "url-address", "port 8080")
}

// The dial-time check holds whatever the name resolved to before: an
// origin on loopback is refused at connect, redirects included.
func TestClientChecksEveryConnection(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret")
	}))
	defer origin.Close()
	public := Policy{}
	_, err := public.Client().Get(origin.URL)
	wantRule(t, err, "url-address")
	if _, _, err := public.Open(context.Background(), origin.URL); err == nil {
		t.Fatal("Open fetched a loopback URL")
	}
	ap := netip.MustParseAddrPort(strings.TrimPrefix(origin.URL, "http://"))
	own := Policy{AllowLocalURLs: true, OwnPorts: []int{int(ap.Port())}}
	if _, err := own.Client().Get(origin.URL); err == nil {
		t.Fatal("the client connected to the node's own port")
	}
	ok := Policy{AllowLocalURLs: true}
	rc, _, err := ok.Open(context.Background(), origin.URL)
	if err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "secret" {
		t.Fatalf("got %q", b)
	}
}

func TestDiskStreamSeeks(t *testing.T) {
	raw := diskBytes(2<<20 + 77)
	for _, format := range []string{XZ, Zstd} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			src := write(t, dir, "d", encode(t, format, raw))
			ds := Policy{Dir: dir}.NewDiskStream(context.Background(), src, format, int64(len(raw)))
			defer ds.Close()
			if end, err := ds.Seek(0, io.SeekEnd); err != nil || end != int64(len(raw)) {
				t.Fatalf("end %d %v", end, err)
			}
			for _, off := range []int64{1 << 20, 5, 2<<20 + 70, 0, 1<<20 + 4096} {
				if _, err := ds.Seek(off, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 100)
				n, err := io.ReadFull(ds, buf)
				want := raw[off:min(off+100, int64(len(raw)))]
				if (err != nil && !errors.Is(err, io.ErrUnexpectedEOF)) || !bytes.Equal(buf[:n], want) {
					t.Fatalf("at %d: %d bytes, %v", off, n, err)
				}
			}
			// A stream shorter than the catalog says is an error, not EOF.
			short := Policy{Dir: dir}.NewDiskStream(context.Background(), src, format, int64(len(raw))+10)
			defer short.Close()
			if _, err := io.Copy(io.Discard, short); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("short stream: %v", err)
			}
		})
	}
}
