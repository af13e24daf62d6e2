package pxe

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The TFTP loop's system calls on its non-blocking sockets go through
// RawSyscall: they return at once, so the runtime need not know. Through
// Syscall, the first one after the process went idle wakes sysmon from
// its deep sleep, and sysmon then polls every 20 µs for a millisecond:
// ~50 thread wake-ups per file, a third of what the transfer itself costs
// (measured; see BENCHMARKS.md). Only calls that cannot block are raw.

// tftpSys issues the loop's system calls raw.
type tftpSys struct{}

func (tftpSys) call(trap, a1, a2, a3 uintptr) (uintptr, error) {
	r, _, e := unix.RawSyscall(trap, a1, a2, a3)
	if e != 0 {
		return r, e
	}
	return r, nil
}

func (s tftpSys) read(fd int, b []byte) (int, error) {
	r, err := s.call(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(r), err
}

// write sends b on connected socket fd without ever blocking
// (MSG_DONTWAIT): a full send buffer is EAGAIN, a lost datagram the
// retransmission timer resends.
func (tftpSys) write(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

func (s tftpSys) close(fd int) error {
	_, err := s.call(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return err
}

// epollWait polls epfd without waiting (timeout 0).
func (tftpSys) epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(events)))
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), p, uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func (tftpSys) epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func (s tftpSys) socketUDP4() (int, error) {
	r, err := s.call(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	return int(r), err
}

func (s tftpSys) sockaddr(trap uintptr, fd int, a netip.AddrPort) error {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(a.Port()>>8), byte(a.Port())
	_, err := s.call(trap, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	return err
}

func (s tftpSys) bind(fd int, a netip.AddrPort) error    { return s.sockaddr(unix.SYS_BIND, fd, a) }
func (s tftpSys) connect(fd int, a netip.AddrPort) error { return s.sockaddr(unix.SYS_CONNECT, fd, a) }

// recvmsg4 reads one datagram from an IPv4 socket with its control data:
// the datagram's length, the control data's, and the sender.
func (s tftpSys) recvmsg4(fd int, b, oob []byte) (n, oobn int, from netip.AddrPort, err error) {
	var sa unix.RawSockaddrInet4
	iov := unix.Iovec{Base: unsafe.SliceData(b)}
	iov.SetLen(len(b))
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sa)), Namelen: unix.SizeofSockaddrInet4, Iov: &iov, Iovlen: 1}
	if len(oob) > 0 {
		msg.Control = unsafe.SliceData(oob)
		msg.SetControllen(len(oob))
	}
	r, err := s.call(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), 0)
	if err != nil {
		return 0, 0, netip.AddrPort{}, err
	}
	if sa.Family == unix.AF_INET {
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return int(r), int(msg.Controllen), from, nil
}
