// Package imagesrc knows the disk image files lpmos accepts and where they
// may come from: it recognises formats by their magic bytes (never by file
// name), refuses containers it cannot turn into disk bytes, decompresses
// xz and zstd, converts qcow2 with qemu-img, and enforces the catalog's
// source rules (local files only under the images directory, URLs only to
// public http(s) addresses). The control plane uses it at `image add`, and
// every region again when it serves an image, so an entry written by an
// older version cannot make a region serve an arbitrary file.
//
// What the agent receives is always something the Go standard library
// writes: "raw" or "gzip" (AgentFormat).
package imagesrc

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Formats of catalog sources.
const (
	Raw   = "raw"
	Gzip  = "gzip"
	XZ    = "xz"
	Zstd  = "zstd"
	QCOW2 = "qcow2"
)

// ValidFormat reports whether format is an accepted source format.
func ValidFormat(format string) bool {
	switch format {
	case Raw, Gzip, XZ, Zstd, QCOW2:
		return true
	}
	return false
}

// SniffLen is how many leading bytes Sniff wants (an ISO 9660 volume
// descriptor sits at 0x8001).
const SniffLen = 0x8006

// RuleError is a refused image source: Rule names the rule broken (it is
// the start of the message), Msg says what to do. The API answers it with
// 400.
type RuleError struct {
	Rule string
	Msg  string
}

func (e *RuleError) Error() string { return e.Rule + ": " + e.Msg }

func refuse(rule, format string, args ...any) error {
	return &RuleError{Rule: rule, Msg: fmt.Sprintf(format, args...)}
}

// IsRule reports whether err is a refused source (a 400, not a server fault).
func IsRule(err error) bool {
	var re *RuleError
	return errors.As(err, &re)
}

type container struct {
	name   string
	offset int
	magic  string
	advice string
}

// unsupported are containers lpmos recognises and refuses, with what to do.
func unsupported() []container {
	return []container{
		{"VMDK (VMware)", 0, "KDMV", "convert it with: qemu-img convert -O raw IMAGE.vmdk IMAGE.raw"},
		{"VMDK descriptor (VMware)", 0, "# Disk DescriptorFile", "convert the disk it describes with: qemu-img convert -O raw IMAGE.vmdk IMAGE.raw"},
		{"VHDX (Hyper-V)", 0, "vhdxfile", "convert it with: qemu-img convert -O raw IMAGE.vhdx IMAGE.raw"},
		{"VHD (Hyper-V/Virtual PC)", 0, "conectix", "convert it with: qemu-img convert -O raw IMAGE.vhd IMAGE.raw"},
		{"VDI (VirtualBox)", 0x40, "\x7f\x10\xda\xbe", "convert it with: qemu-img convert -O raw IMAGE.vdi IMAGE.raw"},
		{"VDI (VirtualBox)", 0, "<<< Oracle VM VirtualBox Disk Image >>>", "convert it with: qemu-img convert -O raw IMAGE.vdi IMAGE.raw"},
		{"bzip2", 0, "BZh", "recompress it: bunzip2 IMAGE.bz2 && xz IMAGE (or zstd, gzip)"},
		{"zip archive", 0, "PK\x03\x04", "extract the disk image from the archive (unzip) and add that file"},
		{"7-Zip archive", 0, "7z\xbc\xaf\x27\x1c", "extract the disk image from the archive (7z x) and add that file"},
		{"lz4", 0, "\x04\x22\x4d\x18", "recompress it: lz4 -d IMAGE.lz4 IMAGE && zstd IMAGE"},
		{"tar archive", 257, "ustar", "extract the disk image from the archive (tar xf) and add that file"},
		{"ISO 9660 (installer or live CD)", 0x8001, "CD001", "lpmos writes disk images with a root file system (raw, qcow2, compressed); build or download a cloud/disk image instead of an installer ISO"},
	}
}

// Sniff names the format of a file from its first bytes (up to SniffLen).
// A container lpmos recognises but cannot use is a *RuleError naming it
// and what to do. Anything else is raw.
func Sniff(head []byte) (string, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return XZ, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd, nil
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return QCOW2, nil
	}
	for _, u := range unsupported() {
		if len(head) >= u.offset+len(u.magic) && string(head[u.offset:u.offset+len(u.magic)]) == u.magic {
			return "", refuse("format-supported", "the source is a %s image, which lpmos does not write (it takes raw, gzip, xz, zstd and qcow2): %s", u.name, u.advice)
		}
	}
	return Raw, nil
}

// AgentFormat is what the agent receives for a source format served
// without a converted file: gzip as is, raw for raw and for xz and zstd
// (decompressed on the fly). Inspect converts local qcow2 and xz files
// into gzip instead.
func AgentFormat(format string) string {
	switch format {
	case Gzip, QCOW2:
		return Gzip
	default:
		return Raw
	}
}

// Decompress wraps r (a stream of the given format, positioned at its
// start) into the disk bytes. raw is returned as is.
func Decompress(format string, r io.Reader) (io.ReadCloser, error) {
	switch format {
	case Raw:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, refuse("stream-intact", "gzip header: %v", err)
		}
		return zr, nil
	case XZ:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, refuse("stream-intact", "xz header: %v", err)
		}
		return io.NopCloser(zr), nil
	case Zstd:
		// One goroutine and a bounded window: the region may serve
		// several agents at once.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, refuse("stream-intact", "zstd header: %v", err)
		}
		return zr.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("cannot decompress format %q", format)
}

// checkQCOW2Header refuses qcow2 files that make qemu-img read other
// files: a backing file or an external data file could name any path on
// the region (such as its CA key).
func checkQCOW2Header(head []byte) error {
	if len(head) < 20 {
		return refuse("stream-intact", "qcow2 header is truncated")
	}
	version := binary.BigEndian.Uint32(head[4:8])
	if version != 2 && version != 3 {
		return refuse("format-supported", "qcow2 version %d: convert it with qemu-img convert -O raw", version)
	}
	if binary.BigEndian.Uint64(head[8:16]) != 0 {
		return refuse("qcow2-standalone", "the qcow2 image has a backing file: flatten it first with qemu-img convert -O qcow2 IMAGE.qcow2 FLAT.qcow2 (or -O raw) and add the result")
	}
	if version == 3 && len(head) >= 80 && binary.BigEndian.Uint64(head[72:80])&(1<<2) != 0 {
		return refuse("qcow2-standalone", "the qcow2 image keeps its data in an external file: convert it with qemu-img convert -O raw and add the result")
	}
	return nil
}

// CheckFile refuses a local file whose magic bytes are not those of the
// format the catalog records for it (an entry written before formats were
// recognised by their content, or a file replaced since): a qcow2 recorded
// as raw must not be written to a disk byte for byte.
func CheckFile(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open image %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, SniffLen)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read image %s: %w", path, err)
	}
	got, err := Sniff(head[:n])
	if err != nil {
		return err
	}
	if got != want {
		return refuse("format-matches", "the catalog records %s as %s but the file is %s: add it again with lpmos image add", path, want, got)
	}
	return nil
}
