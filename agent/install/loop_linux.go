package install

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// Loop device ioctls (linux/loop.h).
const (
	ioctlLOOP_SET_FD        = 0x4c00
	ioctlLOOP_CLR_FD        = 0x4c01
	ioctlLOOP_SET_STATUS64  = 0x4c04
	ioctlLOOP_CTL_GET_FREE  = 0x4c82
	loFlagsAutoclear        = 4 // detach when the last user closes it
	loopSetupAttempts       = 5
	loopControlPath         = "/dev/loop-control"
	loopNameSize            = 64
	partitionNodeWaitPeriod = 5 * time.Second
)

// loopInfo64 is struct loop_info64; its layout has no padding on any
// 64-bit or 32-bit Linux ABI Go supports.
type loopInfo64 struct {
	Device         uint64
	Inode          uint64
	Rdevice        uint64
	Offset         uint64
	SizeLimit      uint64
	Number         uint32
	EncryptType    uint32
	EncryptKeySize uint32
	Flags          uint32
	FileName       [loopNameSize]byte
	CryptName      [loopNameSize]byte
	EncryptKey     [32]byte
	Init           [2]uint64
}

// loopDevice is an attached loop device.
type loopDevice struct {
	path string
	f    *os.File
}

// attachLoop exposes [offset, offset+size) of backing as a block device,
// the way `losetup -o -sizelimit` does, so a partition inside a disk image
// file can be mounted.
func attachLoop(backing *os.File, offset, size int64) (*loopDevice, error) {
	ctl, err := os.OpenFile(loopControlPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer ctl.Close()
	var lastErr error
	// GET_FREE then SET_FD is racy against other loop users (losetup, a
	// parallel test): EBUSY means someone took the device first; try again.
	for range loopSetupAttempts {
		n, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), ioctlLOOP_CTL_GET_FREE, 0)
		if errno != 0 {
			return nil, fmt.Errorf("loop: LOOP_CTL_GET_FREE: %w", errno)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openWhenPresent(path, os.O_RDWR)
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, dev.Fd(), ioctlLOOP_SET_FD, backing.Fd()); errno != 0 {
			dev.Close()
			lastErr = fmt.Errorf("loop: LOOP_SET_FD %s: %w", path, errno)
			if errno == syscall.EBUSY {
				continue
			}
			return nil, lastErr
		}
		info := loopInfo64{Offset: uint64(offset), SizeLimit: uint64(size), Flags: loFlagsAutoclear}
		copy(info.FileName[:loopNameSize-1], backing.Name())
		if err := ioctlPtr(dev.Fd(), ioctlLOOP_SET_STATUS64, unsafe.Pointer(&info)); err != nil {
			_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, dev.Fd(), ioctlLOOP_CLR_FD, 0)
			dev.Close()
			return nil, fmt.Errorf("loop: LOOP_SET_STATUS64 %s: %w", path, err)
		}
		return &loopDevice{path: path, f: dev}, nil
	}
	return nil, lastErr
}

// detach releases the loop device. With autoclear set, closing the last
// reference would do it too; clearing explicitly makes it immediate.
func (l *loopDevice) detach() error {
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, l.f.Fd(), ioctlLOOP_CLR_FD, 0)
	cerr := l.f.Close()
	if errno != 0 && errno != syscall.ENXIO {
		return fmt.Errorf("loop: LOOP_CLR_FD %s: %w", l.path, errno)
	}
	return cerr
}

// openWhenPresent opens a device node, waiting briefly for devtmpfs to
// create it (partition nodes appear asynchronously after BLKRRPART, and
// loop nodes after LOOP_CTL_GET_FREE).
func openWhenPresent(path string, flag int) (*os.File, error) {
	deadline := time.Now().Add(partitionNodeWaitPeriod)
	for {
		f, err := os.OpenFile(path, flag, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partitionDevice names partition n of a whole-disk node: vda -> vda1,
// nvme0n1 -> nvme0n1p1, mmcblk0 -> mmcblk0p1 (a "p" when the name ends in
// a digit, as the kernel does).
func partitionDevice(disk string, n int) string {
	if last := disk[len(disk)-1]; last >= '0' && last <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}
