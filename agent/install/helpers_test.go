package install

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"hash/crc32"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
)

// imageServer serves one image with Range support. When dropAt > 0 the
// first response announces the full length, sends dropAt bytes and kills
// the connection, as a flaky network or a restarting server would.
type imageServer struct {
	*httptest.Server
	data   []byte
	dropAt int
	status int // when set, every answer is this status

	mu     sync.Mutex
	ranges []string // Range header of each request ("" for none)
}

func newImageServer(t *testing.T, data []byte, dropAt int) *imageServer {
	s := &imageServer{data: data, dropAt: dropAt}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *imageServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	first := len(s.ranges) == 1
	s.mu.Unlock()
	if s.status != 0 {
		w.WriteHeader(s.status)
		return
	}
	w.Header().Set("ETag", `"img-v1"`)
	if first && s.dropAt > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(s.data[:s.dropAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(s.data))
}

func (s *imageServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// recorder collects progress reports.
type recorder struct {
	mu  sync.Mutex
	got []Progress
}

func (r *recorder) report(_ context.Context, p Progress) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, p)
	return nil
}

func (r *recorder) all() []Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Progress(nil), r.got...)
}

func testOptions(t *testing.T, disk string, rec *recorder) Options {
	return Options{
		Disk: disk, TaskID: "task-7", Report: rec.report,
		Logger:      slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Backoff:     retry.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond},
		MaxFailures: 3, IdleTimeout: 5 * time.Second,
		ProgressInterval: time.Millisecond,
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newDisk makes a sparse regular file of size bytes: the test's "disk".
func newDisk(t *testing.T, size int64) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// ---- an independent GPT writer and checker for the tests ----

const tSector = 512

func tGUID(s string) []byte {
	g, err := parseGUID(s)
	if err != nil {
		panic(err)
	}
	return g[:]
}

// tMakeGPTImage lays out a GPT disk of totalSectors with one partition of
// type typeGUID holding part at LBA 2048, as sgdisk would.
func tMakeGPTImage(t *testing.T, part []byte, typeGUID string, totalSectors int64) []byte {
	t.Helper()
	partSectors := (int64(len(part)) + tSector - 1) / tSector
	if 2048+partSectors+33 > totalSectors {
		t.Fatalf("partition of %d sectors does not fit in %d", partSectors, totalSectors)
	}
	img := make([]byte, totalSectors*tSector)
	copy(img[2048*tSector:], part)
	last := uint64(totalSectors - 1)

	entries := make([]byte, 128*128)
	copy(entries[0:16], tGUID(typeGUID))
	copy(entries[16:32], tGUID("11111111-2222-3333-4444-555555555555"))
	binary.LittleEndian.PutUint64(entries[32:], 2048)
	binary.LittleEndian.PutUint64(entries[40:], uint64(2048+partSectors-1))
	copy(entries[56:], []byte{'r', 0, 'o', 0, 'o', 0, 't', 0})

	hdr := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, 92)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 34)
		binary.LittleEndian.PutUint64(h[48:], last-33)
		copy(h[56:], tGUID("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"))
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
		return h
	}
	// protective MBR
	img[446+4] = 0xee
	binary.LittleEndian.PutUint32(img[446+8:], 1)
	binary.LittleEndian.PutUint32(img[446+12:], uint32(min(last, 0xffffffff)))
	img[510], img[511] = 0x55, 0xaa
	copy(img[1*tSector:], hdr(1, last, 2))
	copy(img[2*tSector:], entries)
	copy(img[(last-32)*tSector:], entries)
	copy(img[last*tSector:], hdr(last, 1, last-32))
	return img
}

// tCheckGPT verifies both GPT headers of disk with CRCs and cross links and
// returns the primary's AlternateLBA and LastUsableLBA.
func tCheckGPT(t *testing.T, disk []byte) (alt, lastUsable uint64) {
	t.Helper()
	lastLBA := uint64(len(disk)/tSector) - 1
	read := func(lba uint64) (h []byte, entries []byte) {
		h = disk[lba*tSector : lba*tSector+92]
		if string(h[:8]) != "EFI PART" {
			t.Fatalf("no GPT header at LBA %d", lba)
		}
		c := bytes.Clone(h)
		binary.LittleEndian.PutUint32(c[16:], 0)
		if got, want := crc32.ChecksumIEEE(c), binary.LittleEndian.Uint32(h[16:]); got != want {
			t.Fatalf("header at LBA %d: CRC %08x, stored %08x", lba, got, want)
		}
		el := binary.LittleEndian.Uint64(h[72:])
		n := binary.LittleEndian.Uint32(h[80:]) * binary.LittleEndian.Uint32(h[84:])
		entries = disk[el*tSector : el*tSector+uint64(n)]
		if got, want := crc32.ChecksumIEEE(entries), binary.LittleEndian.Uint32(h[88:]); got != want {
			t.Fatalf("entries of header at LBA %d: CRC %08x, stored %08x", lba, got, want)
		}
		return h, entries
	}
	p, pe := read(1)
	alt = binary.LittleEndian.Uint64(p[32:])
	if alt != lastLBA {
		t.Fatalf("primary AlternateLBA = %d, want last LBA %d", alt, lastLBA)
	}
	b, be := read(alt)
	if my, other := binary.LittleEndian.Uint64(b[24:]), binary.LittleEndian.Uint64(b[32:]); my != lastLBA || other != 1 {
		t.Fatalf("backup MyLBA %d AlternateLBA %d, want %d and 1", my, other, lastLBA)
	}
	if !bytes.Equal(pe, be) {
		t.Fatal("backup partition array differs from primary")
	}
	lastUsable = binary.LittleEndian.Uint64(p[48:])
	if bl := binary.LittleEndian.Uint64(b[48:]); bl != lastUsable {
		t.Fatalf("LastUsableLBA primary %d backup %d", lastUsable, bl)
	}
	if el := binary.LittleEndian.Uint64(b[72:]); lastUsable >= el {
		t.Fatalf("LastUsableLBA %d overlaps the backup array at %d", lastUsable, el)
	}
	return alt, lastUsable
}

// tMkfsExt4 builds an ext4 file system image of size bytes from the files
// map with `mkfs.ext4 -d`, as image builders do.
func tMkfsExt4(t *testing.T, size int64, files map[string]string) []byte {
	t.Helper()
	testenv.RequireTool(t, "mkfs.ext4", "e2fsprogs")
	testenv.RequireTool(t, "debugfs", "e2fsprogs")
	dir := t.TempDir()
	src := filepath.Join(dir, "root")
	for name, content := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "part.img")
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-d", src, img, fmt.Sprintf("%dk", size/1024)).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tDebugfsCat reads one file out of an ext4 image with debugfs, without
// mounting it: an independent check of what the agent wrote.
func tDebugfsCat(t *testing.T, fsImage []byte, path string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(p, fsImage, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-R", "cat "+path, p).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
