// Package install writes an OS image to a disk the way Ironic and
// Tinkerbell do: stream it over HTTP (resuming with Range), gunzip when
// needed, hash while writing, verify the sha256 and read it back, move the
// GPT backup header to the end of the disk, and drop a cloud-init NoCloud
// seed into the installed root file system.
//
// Progress follows the seed's stages: partitioning 0-20 (inspect the
// target), downloading 20-60 (stream to disk), installing 60-90 (verify,
// fix the GPT), configuring 90-100 (seed). The caller reports "completed".
package install

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
)

// Progress is one progress update; the caller adds task id, MAC and seq.
type Progress struct {
	Stage      string
	Percentage int
	Message    string
	BytesDone  int64
	BytesTotal int64
	Partitions []wire.Partition // the table left on disk, with the last configuring report
}

// Reporter delivers a progress update. An error aborts the install (the
// server refusing progress means the task was cancelled or taken over).
type Reporter func(ctx context.Context, p Progress) error

// Options configure an install.
type Options struct {
	Disk       string       // block device or existing regular file; "" = demo, nothing written
	TaskID     string       // becomes the cloud-init instance-id
	Report     Reporter     // required
	HTTPClient *http.Client // for the image; default: a plain client
	Logger     *slog.Logger // default: slog.Default()

	Backoff          retry.Backoff // image download retries
	MaxFailures      int           // consecutive download failures without progress; default 8
	IdleTimeout      time.Duration // a download delivering nothing this long is retried; default 60s
	ProgressInterval time.Duration // minimum time between progress reports within a stage; default 1s
	MountDir         string        // where to mount the root fs for the seed; default a temp dir
	// EFIVarsDir is the efivarfs to register the UEFI boot entry in; default
	// /sys/firmware/efi/efivars when the machine booted UEFI and the disk is
	// a block device (see makeUEFIBootable). Tests point it at a directory.
	EFIVarsDir string
	// NextInterval, when set, is the interval the server last asked for
	// (0: none); within a stage the longer of it and ProgressInterval holds.
	NextInterval func() time.Duration

	// espFS, when set, mounts and unmounts the EFI system partition
	// instead of the kernel's vfat driver: tests on a kernel built without
	// one (this project's CI host) reach the ESP through mtools.
	espFS espMounter
}

// espMounter mounts a FAT file system read-write on dir and unmounts it,
// writing back what changed.
type espMounter interface {
	mount(dev, dir string) error
	unmount(dir string) error
}

// kernelVFAT mounts through the kernel's vfat driver (the agent's kernel
// has it built in).
type kernelVFAT struct{}

func (kernelVFAT) mount(dev, dir string) error { return syscall.Mount(dev, dir, "vfat", 0, "") }
func (kernelVFAT) unmount(dir string) error    { return syscall.Unmount(dir, 0) }

// Install writes spec's image to o.Disk and configures it. It returns nil
// only when everything was written and verified.
func Install(ctx context.Context, spec wire.InstallSpec, o Options) error {
	in, err := newInstaller(spec, o)
	if err != nil {
		return err
	}
	if o.Disk == "" {
		return in.demo(ctx)
	}
	return in.run(ctx)
}

type installer struct {
	spec     wire.InstallSpec
	o        Options
	log      *slog.Logger
	wantHash []byte
	lastSent time.Time
}

func newInstaller(spec wire.InstallSpec, o Options) (*installer, error) {
	if o.Report == nil {
		return nil, errors.New("install: no progress reporter")
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 8
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	in := &installer{spec: spec, o: o, log: o.Logger}
	if spec.ImageURL == "" && o.Disk == "" {
		return in, nil // demo without an image: stages only
	}
	if spec.ImageURL == "" {
		return nil, errors.New("install: the install spec has no image_url")
	}
	h, err := hex.DecodeString(strings.ToLower(spec.ImageSHA256))
	if err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("install: image_sha256 %q is not a hex sha256", spec.ImageSHA256)
	}
	in.wantHash = h
	switch spec.ImageFormat {
	case "", "raw", "gzip":
	default:
		return nil, fmt.Errorf("install: image format %q not supported (raw, gzip)", spec.ImageFormat)
	}
	if spec.ImageSize <= 0 && o.Disk != "" {
		return nil, fmt.Errorf("install: image_size %d: the size is needed to check the disk first", spec.ImageSize)
	}
	return in, nil
}

// stage reports a stage boundary: always sent.
func (in *installer) stage(ctx context.Context, p Progress) error {
	in.lastSent = time.Now()
	in.log.Info("progress", "stage", p.Stage, "percentage", p.Percentage, "message", p.Message)
	if err := in.o.Report(ctx, p); err != nil {
		return fmt.Errorf("reporting progress: %w", err)
	}
	return nil
}

// tick reports progress within a stage, at most once per ProgressInterval.
func (in *installer) tick(ctx context.Context, p Progress) error {
	iv := in.o.ProgressInterval
	if in.o.NextInterval != nil {
		iv = max(iv, in.o.NextInterval())
	}
	if time.Since(in.lastSent) < iv {
		return nil
	}
	return in.stage(ctx, p)
}

func (in *installer) run(ctx context.Context) (err error) {
	size := in.spec.ImageSize
	if err := in.stage(ctx, Progress{Stage: wire.StagePartitioning, Percentage: 0, Message: "inspecting " + in.o.Disk}); err != nil {
		return err
	}
	t, err := openTarget(in.o.Disk)
	if err != nil {
		return err
	}
	defer func() { t.f.Close() }() // configure may reopen it
	if t.size < size {
		return fmt.Errorf("disk %s is too small: %d bytes (%s), the image needs %d bytes (%s)",
			t.path, t.size, human(t.size), size, human(size))
	}
	if err := in.stage(ctx, Progress{Stage: wire.StagePartitioning, Percentage: 20,
		Message: fmt.Sprintf("%s: %s, image %s", t.path, human(t.size), human(size))}); err != nil {
		return err
	}

	// From the first byte written on, a failure leaves a half-written disk
	// that firmware might try to boot; wipe its start so the machine falls
	// back to PXE instead.
	var written int64
	defer func() {
		if err != nil && written > 0 {
			in.wipe(t, written)
		}
	}()

	if err := in.stage(ctx, Progress{Stage: wire.StageDownloading, Percentage: 20, BytesTotal: size,
		Message: "streaming " + in.spec.ImageURL}); err != nil {
		return err
	}
	var sum []byte
	written, sum, err = in.stream(ctx, t.f, t.size, func(done int64) error {
		return in.tick(ctx, Progress{Stage: wire.StageDownloading, Percentage: 20 + int(40*done/size),
			BytesDone: done, BytesTotal: size, Message: fmt.Sprintf("written %s of %s", human(done), human(size))})
	})
	if err != nil {
		return err
	}
	if written != size {
		return fmt.Errorf("image is %d bytes, the install spec says %d", written, size)
	}
	if !equalHash(sum, in.wantHash) {
		return fmt.Errorf("image checksum mismatch: sha256 %x, want %x", sum, in.wantHash)
	}
	if err := in.stage(ctx, Progress{Stage: wire.StageDownloading, Percentage: 60, BytesDone: size, BytesTotal: size,
		Message: "image written, sha256 verified"}); err != nil {
		return err
	}

	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", t.path, err)
	}
	if err := t.dropCache(); err != nil {
		in.log.Warn("read-back may come from cache", "error", err)
	}
	if err := in.stage(ctx, Progress{Stage: wire.StageInstalling, Percentage: 60, BytesTotal: size,
		Message: "reading back " + t.path}); err != nil {
		return err
	}
	if err := in.readBack(ctx, t, size); err != nil {
		return err
	}
	moved, err := relocateBackupGPT(t.f, t.size)
	if err != nil {
		return fmt.Errorf("fixing GPT: %w", err)
	}
	msg := "read-back verified"
	if moved {
		msg += ", GPT backup header moved to the end of the disk"
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", t.path, err)
	}
	if err := in.stage(ctx, Progress{Stage: wire.StageInstalling, Percentage: 90, BytesDone: size, BytesTotal: size, Message: msg}); err != nil {
		return err
	}

	if err := in.stage(ctx, Progress{Stage: wire.StageConfiguring, Percentage: 90, Message: "writing cloud-init NoCloud seed"}); err != nil {
		return err
	}
	msg, parts, err := in.configure(t)
	if err != nil {
		return err
	}
	if bmsg, err := in.makeUEFIBootable(t); err != nil {
		return err
	} else if bmsg != "" {
		msg += "; " + bmsg
	}
	return in.stage(ctx, Progress{Stage: wire.StageConfiguring, Percentage: 100, Message: msg, Partitions: parts})
}

// stream downloads the image into w (at offset 0), hashing what it writes.
func (in *installer) stream(ctx context.Context, w io.WriterAt, limit int64, tick func(done int64) error) (int64, []byte, error) {
	src := newResumingReader(ctx, in.o.HTTPClient, in.spec.ImageURL, in.log, in.o.Backoff, in.o.MaxFailures, in.o.IdleTimeout)
	defer src.Close()
	var r io.Reader = src
	if in.spec.ImageFormat == "gzip" {
		zr, err := gzip.NewReader(src)
		if err != nil {
			return 0, nil, fmt.Errorf("image: gzip: %w", err)
		}
		defer zr.Close()
		r = corruptReader{r: zr, format: "gzip"}
	}
	h := sha256.New()
	dw := &diskWriter{w: w, h: h, limit: limit, tick: tick}
	if _, err := io.CopyBuffer(dw, r, make([]byte, 1<<20)); err != nil {
		return dw.off, nil, err
	}
	return dw.off, h.Sum(nil), nil
}

// corruptReader names a decompressor's complaint about its input as what
// it is, a corrupt or truncated image stream; errors of the download
// itself pass through unchanged (they say what happened already).
type corruptReader struct {
	r      io.Reader
	format string
}

func (c corruptReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	var flateErr flate.CorruptInputError
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("image: the %s stream ends early (truncated image): %w", c.format, err)
	case errors.As(err, &flateErr), errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		err = fmt.Errorf("image: the %s stream is corrupt: %w", c.format, err)
	}
	return n, err
}

// diskWriter writes sequentially with WriteAt (block devices and files
// alike), hashes the bytes, and refuses to run past the end of the disk.
type diskWriter struct {
	w     io.WriterAt
	h     hash.Hash
	off   int64
	limit int64
	tick  func(done int64) error
}

func (d *diskWriter) Write(p []byte) (int, error) {
	if d.off+int64(len(p)) > d.limit {
		return 0, fmt.Errorf("image is larger than the disk (%d bytes)", d.limit)
	}
	n, err := d.w.WriteAt(p, d.off)
	d.h.Write(p[:n])
	d.off += int64(n)
	if err != nil {
		return n, fmt.Errorf("writing disk at byte %d: %w", d.off, err)
	}
	if d.tick != nil {
		if err := d.tick(d.off); err != nil {
			return n, err
		}
	}
	return n, nil
}

// readBack re-reads the image area and compares its sha256: a disk that
// silently drops writes is caught here, not at first boot.
func (in *installer) readBack(ctx context.Context, t *target, size int64) error {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := t.f.ReadAt(buf[:n], off); err != nil {
			return fmt.Errorf("reading back %s at byte %d: %w", t.path, off, err)
		}
		h.Write(buf[:n])
		off += n
		if err := in.tick(ctx, Progress{Stage: wire.StageInstalling, Percentage: 60 + int(25*off/size),
			BytesDone: off, BytesTotal: size, Message: fmt.Sprintf("verified %s of %s", human(off), human(size))}); err != nil {
			return err
		}
	}
	if sum := h.Sum(nil); !equalHash(sum, in.wantHash) {
		return fmt.Errorf("read-back checksum mismatch on %s: sha256 %x, want %x", t.path, sum, in.wantHash)
	}
	return nil
}

// configure finds the installed root file system (see findRoot) and
// writes the NoCloud seed into it. It returns the progress message and the
// partition table with each partition's file system and role. Every way
// of not writing the seed is an error: a task must not complete without
// its hostname and keys.
func (in *installer) configure(t *target) (string, []wire.Partition, error) {
	parts, err := readPartitionTable(t.f)
	if err != nil {
		return "", nil, fmt.Errorf("reading the partition table the image left: %w", err)
	}
	var acc partitionAccess = loopAccess{f: t.f}
	if t.block {
		if err := t.rereadPartitions(); err != nil {
			return "", parts, err
		}
		if err := t.releaseExclusive(); err != nil {
			return "", parts, err
		}
		disk, err := filepath.EvalSymlinks(t.path)
		if err != nil {
			return "", parts, fmt.Errorf("resolving %s: %w", t.path, err)
		}
		acc = nodeAccess{disk: disk, f: t.f}
	}
	dir := in.o.MountDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "lpmos-root-"); err != nil {
			return "", parts, fmt.Errorf("mount point: %w", err)
		}
		defer os.Remove(dir)
	}
	root, err := findRoot(t.f, parts, acc, dir)
	if err != nil {
		return "", parts, fmt.Errorf("cloud-init seed not written: %w", err)
	}
	defer root.release()
	where := fmt.Sprintf("partition %d (%s%s)", root.part.Number, root.fstype, optSuffix(root.data))
	if err := syscall.Mount(root.dev, dir, root.fstype, 0, root.data); err != nil {
		return "", parts, fmt.Errorf("cloud-init seed not written: mounting the root file system, %s, read-write: %w", where, err)
	}
	werr := writeSeed(dir, in.o.TaskID, in.spec)
	syscall.Sync()
	if err := syscall.Unmount(dir, 0); err != nil {
		return "", parts, errors.Join(werr, fmt.Errorf("unmounting %s: %w", dir, err))
	}
	if werr != nil {
		// The temporary mount point means nothing to the operator.
		return "", parts, fmt.Errorf("cloud-init seed not written to %s: %s", where, strings.ReplaceAll(werr.Error(), dir, ""))
	}
	in.log.Info("cloud-init seed written", "device", root.dev, "partition", root.part.Number, "fstype", root.fstype, "options", root.data)
	return "cloud-init seed written to " + where, parts, nil
}

// loopAccess exposes a partition of an image file through a loop device.
type loopAccess struct{ f *os.File }

func (a loopAccess) open(p wire.Partition) (string, func(), error) {
	loop, err := attachLoop(a.f, p.StartBytes, p.SizeBytes)
	if err != nil {
		return "", nil, fmt.Errorf("partition %d: %w", p.Number, err)
	}
	return loop.path, func() { _ = loop.detach() }, nil
}

// nodeAccess names the kernel's partition node of a block device. When
// the kernel does not show the partition (a kernel without that partition
// table parser, a disk whose re-read was refused) or its node never
// appears, a loop device over the disk's byte range stands in for it.
type nodeAccess struct {
	disk string
	f    *os.File // the disk, opened without O_EXCL
}

func (a nodeAccess) open(p wire.Partition) (string, func(), error) {
	dev := partitionDevice(a.disk, p.Number)
	var nodeErr error
	if _, err := os.Stat(filepath.Join("/sys/class/block", filepath.Base(dev))); err != nil {
		nodeErr = fmt.Errorf("the kernel lists no %s", filepath.Base(dev))
	} else if f, err := openWhenPresent(dev, os.O_RDONLY); err != nil {
		nodeErr = err
	} else {
		f.Close()
		return dev, func() {}, nil
	}
	dev, release, err := loopAccess{f: a.f}.open(p)
	if err != nil {
		return "", nil, errors.Join(fmt.Errorf("partition %d of %s: %w", p.Number, a.disk, nodeErr), err)
	}
	return dev, release, nil
}

// wipe zeroes what could make a failed install look bootable or look like
// a valid disk: the first MiB (MBR, primary GPT, boot loader), the last
// MiB of what was written (the image's own backup GPT sits at its end)
// and the last MiB of the disk (a relocated backup GPT). Best effort: the
// failure being reported matters more.
func (in *installer) wipe(t *target, written int64) {
	const mib = 1 << 20
	areas := [][2]int64{{0, min(mib, t.size)}}
	for _, end := range []int64{min(written, t.size), min(in.spec.ImageSize, t.size), t.size} {
		if end > mib {
			areas = append(areas, [2]int64{max(end-mib, mib), end})
		}
	}
	zero := make([]byte, mib)
	for _, a := range areas {
		if _, err := t.f.WriteAt(zero[:a[1]-a[0]], a[0]); err != nil {
			in.log.Warn("could not wipe the failed disk", "offset", a[0], "error", err)
			return
		}
	}
	_ = t.f.Sync()
	in.log.Info("wiped the start and end of the disk so it does not boot a broken image", "disk", t.path)
}

// demo runs every stage against the server with nothing written: the image
// (when the spec names one) is streamed, hashed and discarded.
func (in *installer) demo(ctx context.Context) error {
	size := in.spec.ImageSize
	steps := []Progress{
		{Stage: wire.StagePartitioning, Percentage: 0, Message: "demo: no disk, nothing is written"},
		{Stage: wire.StagePartitioning, Percentage: 20, Message: "demo: partitioning skipped"},
		{Stage: wire.StageDownloading, Percentage: 20, BytesTotal: size, Message: "demo: streaming the image to nowhere"},
	}
	for _, p := range steps {
		if err := in.demoStage(ctx, p); err != nil {
			return err
		}
	}
	if in.spec.ImageURL != "" {
		n, sum, err := in.stream(ctx, discardAt{}, 1<<62, func(done int64) error {
			pct := 40
			if size > 0 {
				pct = 20 + int(40*min(done, size)/size)
			}
			return in.tick(ctx, Progress{Stage: wire.StageDownloading, Percentage: pct, BytesDone: done, BytesTotal: size,
				Message: fmt.Sprintf("demo: read %s", human(done))})
		})
		if err != nil {
			return err
		}
		if !equalHash(sum, in.wantHash) {
			return fmt.Errorf("image checksum mismatch: sha256 %x, want %x", sum, in.wantHash)
		}
		in.log.Info("demo: image streamed and verified, nothing written", "bytes", n)
	} else {
		if err := retry.Sleep(ctx, in.o.ProgressInterval); err != nil {
			return err
		}
	}
	for _, p := range []Progress{
		{Stage: wire.StageDownloading, Percentage: 60, Message: "demo: download done"},
		{Stage: wire.StageInstalling, Percentage: 60, Message: "demo: nothing to verify"},
		{Stage: wire.StageInstalling, Percentage: 90, Message: "demo: installing skipped"},
		{Stage: wire.StageConfiguring, Percentage: 90, Message: "demo: cloud-init seed rendered, not written"},
		{Stage: wire.StageConfiguring, Percentage: 100, Message: "demo: configuring done"},
	} {
		if err := in.demoStage(ctx, p); err != nil {
			return err
		}
	}
	in.log.Info("demo: meta-data that would be written", "meta-data", string(NoCloudMetaData(in.o.TaskID, in.spec)))
	if nc := NoCloudNetworkConfig(in.spec); nc != nil {
		in.log.Info("demo: network-config that would be written", "network-config", string(nc))
	}
	return nil
}

// demoStage paces the demo's reports one ProgressInterval apart: nothing
// real takes time in a demo, and an operator watching the dashboard should
// see the bar move, as the seed's demo shows it.
func (in *installer) demoStage(ctx context.Context, p Progress) error {
	if err := retry.Sleep(ctx, in.o.ProgressInterval); err != nil {
		return err
	}
	return in.stage(ctx, p)
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

func equalHash(a, b []byte) bool { return bytes.Equal(a, b) }

// human formats a byte count for messages (binary units, one decimal).
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
