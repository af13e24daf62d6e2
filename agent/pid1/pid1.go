// Package pid1 does what an init must when the agent is /init of the lpmos
// initramfs: mount the kernel file systems, load the shipped kernel modules,
// bring the boot NIC up (ip= from the kernel line, else DHCP), reap
// orphans, and reboot or power off at the end. Nothing here may panic or
// exit: PID 1 exiting panics the kernel.
package pid1

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// IsInit reports whether this process is PID 1.
func IsInit() bool { return os.Getpid() == 1 }

// MountEarly mounts /proc, /sys, /dev (devtmpfs: device nodes appear by
// themselves, no udev needed), /run and /tmp. Already-mounted targets are
// fine: a kernel with CONFIG_DEVTMPFS_MOUNT mounts /dev itself.
func MountEarly() error {
	var errs []error
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.dir, err))
			continue
		}
		if err := syscall.Mount(m.src, m.dir, m.fstype, syscall.MS_NOSUID, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err))
		}
	}
	return errors.Join(errs...)
}

// Reap collects exited children until ctx ends. As PID 1 the agent
// inherits every orphan; unreaped they stay zombies forever.
func Reap(ctx context.Context) {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// Sync flushes every file system's dirty data to disk.
func Sync() { syscall.Sync() }

// Restart syncs the disks, then reboots, or powers off when powerOff is
// set. It returns only on failure.
func Restart(powerOff bool) error {
	syscall.Sync()
	cmd := syscall.LINUX_REBOOT_CMD_RESTART
	if powerOff {
		cmd = syscall.LINUX_REBOOT_CMD_POWER_OFF
	}
	if err := syscall.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}

// Halt keeps PID 1 alive forever (reaping) so the reason of a fatal error
// stays on the console: exiting would panic the kernel, and rebooting would
// PXE-boot straight back into the same failure.
func Halt() {
	syscall.Sync()
	Reap(context.Background())
	for {
		time.Sleep(time.Hour)
	}
}
