package install

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Block device ioctls (linux/fs.h). The numbers are the same on amd64 and
// arm64.
const (
	ioctlBLKRRPART    = 0x125f     // re-read the partition table
	ioctlBLKFLSBUF    = 0x1261     // flush and drop the buffer cache
	ioctlBLKSSZGET    = 0x1268     // logical sector size (int)
	ioctlBLKGETSIZE64 = 0x80081272 // size in bytes (u64)
)

func ioctlPtr(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// target is the disk being written: a block device or a regular file (how
// tests and operators rehearse an install without a spare disk).
type target struct {
	f          *os.File
	path       string
	block      bool
	size       int64
	sectorSize int64
}

// openTarget opens path for writing and measures it. A block device is
// opened O_EXCL, which the kernel refuses while any of its partitions is
// mounted: the agent must never overwrite a disk in use.
func openTarget(path string) (*target, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("target disk: %w", err)
	}
	t := &target{path: path, sectorSize: 512}
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		t.block = true
		if t.f, err = os.OpenFile(path, os.O_RDWR|syscall.O_EXCL, 0); err != nil {
			return nil, fmt.Errorf("target disk (in use?): %w", err)
		}
		var size uint64
		if err := ioctlPtr(t.f.Fd(), ioctlBLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
			t.f.Close()
			return nil, fmt.Errorf("target disk %s: BLKGETSIZE64: %w", path, err)
		}
		t.size = int64(size)
		var ssz int32
		if err := ioctlPtr(t.f.Fd(), ioctlBLKSSZGET, unsafe.Pointer(&ssz)); err == nil && ssz >= 512 {
			t.sectorSize = int64(ssz)
		}
	case st.Mode().IsRegular():
		if t.f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			return nil, fmt.Errorf("target disk: %w", err)
		}
		t.size = st.Size()
	default:
		return nil, fmt.Errorf("target disk %s is neither a block device nor a regular file (%v)", path, st.Mode())
	}
	return t, nil
}

// dropCache makes the read-back verify read the medium, not the page cache
// that still holds what was just written.
func (t *target) dropCache() error {
	if !t.block {
		return nil // a regular file has no cache to bypass that matters here
	}
	if err := ioctlPtr(t.f.Fd(), ioctlBLKFLSBUF, nil); err != nil {
		return fmt.Errorf("BLKFLSBUF %s: %w", t.path, err)
	}
	return nil
}

// releaseExclusive reopens the disk without O_EXCL. The kernel refuses
// to mount a partition (EBUSY) while another opener holds its whole disk
// exclusively, so the claim must go before the root is mounted.
func (t *target) releaseExclusive() error {
	f, err := os.OpenFile(t.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("reopening %s: %w", t.path, err)
	}
	old := t.f
	t.f = f
	return old.Close()
}

// rereadPartitions asks the kernel to pick up the new partition table so
// the partition device nodes (vda1, nvme0n1p1) appear.
func (t *target) rereadPartitions() error {
	if err := ioctlPtr(t.f.Fd(), ioctlBLKRRPART, nil); err != nil {
		return fmt.Errorf("BLKRRPART %s: %w", t.path, err)
	}
	return nil
}
