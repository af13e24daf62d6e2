package imagesrc

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	kgzip "github.com/klauspost/compress/gzip"
)

// DerivedDir is the directory, inside the images directory, that holds
// the files lpmos converts (qcow2 to gzip-compressed raw).
const DerivedDir = ".lpmos-derived"

// Info describes a source as the catalog records it.
type Info struct {
	Source      string // the local path with symlinks resolved, or the URL
	Format      string // format of the source: raw, gzip, xz, zstd, qcow2
	AgentFormat string // what the agent receives: raw or gzip
	SHA256      string // hex sha256 of the disk bytes (what lands on disk)
	Size        int64  // disk bytes
	FileSize    int64  // bytes of the source file
	Derived     string // converted file served instead of the source ("" = none)
}

// Inspect reads src once, fully: it recognises the format by its magic
// bytes, refuses containers it cannot use, decompresses (a corrupt or
// truncated stream is refused), converts a local qcow2 or xz file into a
// gzip file under Dir/.lpmos-derived named after name, and returns size
// and sha256 of the disk bytes. Refusals are *RuleError.
func (p Policy) Inspect(ctx context.Context, src, name string) (Info, error) {
	info := Info{Source: src}
	if !IsURL(src) {
		path, err := p.LocalPath(src)
		if err != nil {
			return info, err
		}
		info.Source = path
	}
	rc, _, err := p.Open(ctx, info.Source)
	if err != nil {
		return info, err
	}
	defer rc.Close()
	counted := &countingReader{r: rc, ctx: ctx}
	br := bufio.NewReaderSize(counted, 1<<20)
	head, err := br.Peek(SniffLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return info, fmt.Errorf("read %s: %w", src, err)
	}
	if info.Format, err = Sniff(head); err != nil {
		return info, err
	}
	if info.Format == QCOW2 {
		info.AgentFormat = Gzip
		if IsURL(src) {
			return info, refuse("format-supported", "qcow2 images need random access to convert: download %s into the images directory %s and add the file", src, p.Dir)
		}
		if err := checkQCOW2Header(head); err != nil {
			return info, err
		}
		st, err := os.Stat(info.Source)
		if err != nil {
			return info, fmt.Errorf("stat %s: %w", info.Source, err)
		}
		info.FileSize = st.Size()
		return p.convertQCOW2(ctx, info, name)
	}
	disk, err := Decompress(info.Format, br)
	if err != nil {
		return info, err
	}
	defer disk.Close()
	var r io.Reader = br
	if info.Format != Raw {
		inner := bufio.NewReaderSize(disk, 1<<20)
		if err := checkInner(inner, info.Format); err != nil {
			return info, err
		}
		r = inner
	}
	if info.Format == XZ && !IsURL(src) {
		// Pure-Go xz decodes at a few tens of MB/s, slower than the
		// network: convert once, in this same pass, and serve gzip.
		info.AgentFormat = Gzip
		path, sum, n, err := p.writeDerived(r, name)
		if err != nil {
			return info, p.readErr(ctx, info, src, n, err)
		}
		info.Derived, info.SHA256, info.Size, info.FileSize = path, sum, n, counted.n
		return info, nil
	}
	info.AgentFormat = AgentFormat(info.Format)
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return info, p.readErr(ctx, info, src, n, err)
	}
	if n == 0 {
		return info, refuse("source-not-empty", "%s holds no disk bytes", src)
	}
	info.Size, info.FileSize, info.SHA256 = n, counted.n, hex.EncodeToString(h.Sum(nil))
	return info, nil
}

// readErr names a failure to read the disk bytes after n of them.
func (p Policy) readErr(ctx context.Context, info Info, src string, n int64, err error) error {
	var we *writeError
	if IsRule(err) || errors.As(err, &we) {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("read %s: %w", src, ctx.Err())
	}
	if info.Format != Raw {
		return refuse("stream-intact", "the %s stream of %s is corrupt or truncated after %d disk bytes: %v", info.Format, src, n, err)
	}
	return fmt.Errorf("read %s: %w", src, err)
}

// writeDerived gzip-compresses the disk bytes r into the derived
// directory (named after name and the sha256), hashing them on the way.
// Nothing is left behind on error.
func (p Policy) writeDerived(r io.Reader, name string) (path, sum string, n int64, err error) {
	dir := filepath.Join(p.Dir, DerivedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", 0, fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, name+"-*.raw.gz.tmp")
	if err != nil {
		return "", "", 0, fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	zw, err := kgzip.NewWriterLevel(bw, kgzip.BestSpeed)
	if err != nil {
		tmp.Close()
		return "", "", 0, fmt.Errorf("gzip writer: %w", err)
	}
	h := sha256.New()
	rr := &readErrReader{r: r}
	n, err = io.Copy(io.MultiWriter(zw, h), rr)
	if err != nil {
		tmp.Close()
		if rr.err != nil {
			return "", "", n, rr.err // a read error: the caller names it
		}
		return "", "", n, &writeError{fmt.Errorf("write converted image in %s: %w", dir, err)}
	}
	if n == 0 {
		tmp.Close()
		return "", "", 0, refuse("source-not-empty", "the image holds no disk bytes")
	}
	err = zw.Close()
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", n, &writeError{fmt.Errorf("write converted image in %s: %w", dir, err)}
	}
	sum = hex.EncodeToString(h.Sum(nil))
	path = filepath.Join(dir, fmt.Sprintf("%s-%.16s.raw.gz", name, sum))
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", "", n, &writeError{fmt.Errorf("store converted image: %w", err)}
	}
	return path, sum, n, nil
}

// checkInner refuses a compressed stream that holds a container rather
// than disk bytes (a .qcow2.xz, a .tar.gz...).
func checkInner(inner *bufio.Reader, outer string) error {
	head, err := inner.Peek(SniffLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return refuse("stream-intact", "the %s stream is corrupt: %v", outer, err)
	}
	f, err := Sniff(head)
	if err != nil {
		var re *RuleError
		errors.As(err, &re)
		return refuse("format-supported", "inside the %s compression, %s", outer, re.Msg)
	}
	if f != Raw {
		return refuse("format-supported", "the %s stream holds a %s image: decompress it and add the %s file (lpmos takes one layer: a raw image, compressed or not, or a qcow2)", outer, f, f)
	}
	return nil
}

// convertQCOW2 converts a local qcow2 file with qemu-img into raw, then
// gzip-compresses it (zeros cost nothing on the wire) into the derived
// file the region serves; size and sha256 are those of the raw bytes.
func (p Policy) convertQCOW2(ctx context.Context, info Info, name string) (Info, error) {
	prog := p.QemuImg
	if prog == "" {
		prog = "qemu-img"
	}
	exe, err := exec.LookPath(prog)
	if err != nil {
		return info, refuse("format-supported", "qcow2 images are converted with qemu-img, which is not installed on this node: install the package qemu-utils (apt-get install qemu-utils), or convert the image yourself with qemu-img convert -O raw IMAGE.qcow2 IMAGE.raw and add that")
	}
	dir := filepath.Join(p.Dir, DerivedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return info, fmt.Errorf("create %s: %w", dir, err)
	}
	tmpRaw, err := os.CreateTemp(dir, name+"-*.raw.tmp")
	if err != nil {
		return info, fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	tmpRaw.Close()
	defer os.Remove(tmpRaw.Name())
	// -f qcow2: never let qemu-img probe the format; the header was
	// checked for backing and external data files.
	cmd := exec.CommandContext(ctx, exe, "convert", "-q", "-f", "qcow2", "-O", "raw", info.Source, tmpRaw.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return info, fmt.Errorf("qemu-img convert %s: %w", info.Source, ctx.Err())
		}
		return info, refuse("stream-intact", "qemu-img cannot convert %s (%v): %s", info.Source, err, strings.TrimSpace(string(out)))
	}
	rawF, err := os.Open(tmpRaw.Name())
	if err != nil {
		return info, fmt.Errorf("open converted image: %w", err)
	}
	defer rawF.Close()
	raw := bufio.NewReaderSize(&countingReader{r: rawF, ctx: ctx}, 1<<20)
	if err := checkInner(raw, QCOW2); err != nil {
		return info, err
	}
	path, sum, n, err := p.writeDerived(raw, name)
	if err != nil {
		if IsRule(err) {
			return info, err
		}
		return info, fmt.Errorf("convert %s: %w", info.Source, err)
	}
	info.Derived, info.SHA256, info.Size = path, sum, n
	return info, nil
}

// writeError is a failure to write a converted file (a server fault, not
// a bad source).
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// readErrReader remembers its reader's error.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

type countingReader struct {
	r   io.Reader
	ctx context.Context
	n   int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
