package pxe

import (
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The TFTP loop's system calls on its non-blocking sockets go through
// RawSyscall: they return at once, so the runtime need not know. Through
// Syscall, the first one after the process went idle wakes sysmon from
// its deep sleep, and sysmon then polls every 20 µs for a millisecond,
// again and again as the loop idles between blocks: 166-190 thread
// wake-ups per 145-block file instead of 145, dnsmasq's count (BENCHMARKS.md,
// issue 14 tftpblk). Only calls that cannot block are raw.

// tftpSys issues the loop's system calls raw. Every pointer is converted
// to uintptr in the RawSyscall call itself, the one place the compiler
// keeps what it points to alive and in place (a helper taking uintptrs
// could see a stack copy move it).
type tftpSys struct{}

func errno(e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func (tftpSys) read(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(r), errno(e)
}

// write sends b on connected socket fd without ever blocking
// (MSG_DONTWAIT): a full send buffer is EAGAIN, a lost datagram the
// retransmission timer resends.
func (tftpSys) write(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	return int(r), errno(e)
}

func (tftpSys) close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// epollWait polls epfd without waiting (timeout 0).
func (tftpSys) epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	return int(r), errno(e)
}

// epollBlockRaw waits in epoll_pwait for at most d (rounded up to the
// millisecond), raw: the goroutine keeps its P meanwhile (see
// tftpLoop.run for the bounds that makes acceptable). A signal (the
// runtime's preemption SIGURG) ends it early with EINTR.
func (tftpSys) epollBlockRaw(epfd int, events []unix.EpollEvent, d time.Duration) (int, error) {
	ms := max(0, (d+time.Millisecond-1)/time.Millisecond)
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), uintptr(ms), 0, 0)
	return int(r), errno(e)
}

func (tftpSys) epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno(e)
}

func (tftpSys) socketUDP4() (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	return int(r), errno(e)
}

func sockaddr4(a netip.AddrPort) *unix.RawSockaddrInet4 {
	sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(a.Port()>>8), byte(a.Port())
	return sa
}

func (tftpSys) bind(fd int, a netip.AddrPort) error {
	sa := sockaddr4(a)
	_, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4)
	return errno(e)
}

func (tftpSys) connect(fd int, a netip.AddrPort) error {
	sa := sockaddr4(a)
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4)
	return errno(e)
}

// recvmsg4 reads one datagram from an IPv4 socket with its control data:
// the datagram's length, the control data's, and the sender.
func (tftpSys) recvmsg4(fd int, b, oob []byte) (n, oobn int, from netip.AddrPort, err error) {
	sa := new(unix.RawSockaddrInet4)
	iov := &unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	msg := &unix.Msghdr{Name: (*byte)(unsafe.Pointer(sa)), Namelen: unix.SizeofSockaddrInet4, Iov: iov, Iovlen: 1}
	if len(oob) > 0 {
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), 0)
	if e != 0 {
		return 0, 0, netip.AddrPort{}, e
	}
	if sa.Family == unix.AF_INET {
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return int(r), int(msg.Controllen), from, nil
}
