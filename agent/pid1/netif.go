package pid1

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// Interface ioctls (linux/sockios.h), the same on amd64 and arm64.
const (
	ioctlSIOCADDRT      = 0x890b
	ioctlSIOCGIFFLAGS   = 0x8913
	ioctlSIOCSIFFLAGS   = 0x8914
	ioctlSIOCSIFADDR    = 0x8916
	ioctlSIOCSIFNETMASK = 0x891c
	rtfUp               = 0x1
	rtfGateway          = 0x2
)

// sockaddrIn is struct sockaddr_in as the ioctls take it.
type sockaddrIn struct {
	Family uint16
	Port   uint16
	Addr   [4]byte
	Zero   [8]byte
}

func inet(ip net.IP) sockaddrIn {
	s := sockaddrIn{Family: syscall.AF_INET}
	copy(s.Addr[:], ip.To4())
	return s
}

// ifreqAddr and ifreqFlags are struct ifreq (40 bytes on 64-bit) with the
// union member each ioctl uses.
type ifreqAddr struct {
	Name [syscall.IFNAMSIZ]byte
	Addr sockaddrIn
	_    [8]byte
}

type ifreqFlags struct {
	Name  [syscall.IFNAMSIZ]byte
	Flags uint16
	_     [22]byte
}

// rtentry is struct rtentry; Go's natural alignment reproduces the C
// layout on both 64-bit targets.
type rtentry struct {
	Pad1    uintptr
	Dst     sockaddrIn
	Gateway sockaddrIn
	Genmask sockaddrIn
	Flags   uint16
	Pad2    int16
	Pad3    uintptr
	Pad4    uintptr
	Metric  int16
	Dev     uintptr
	Mtu     uintptr
	Window  uintptr
	Irtt    uint16
}

func ifname(name string) ([syscall.IFNAMSIZ]byte, error) {
	var b [syscall.IFNAMSIZ]byte
	if len(name) == 0 || len(name) >= len(b) {
		return b, fmt.Errorf("interface name %q invalid", name)
	}
	copy(b[:], name)
	return b, nil
}

func ioctlSock(req uintptr, arg unsafe.Pointer) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// LinkUp sets IFF_UP on the interface.
func LinkUp(name string) error {
	n, err := ifname(name)
	if err != nil {
		return err
	}
	req := ifreqFlags{Name: n}
	if err := ioctlSock(ioctlSIOCGIFFLAGS, unsafe.Pointer(&req)); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	req.Flags |= syscall.IFF_UP
	if err := ioctlSock(ioctlSIOCSIFFLAGS, unsafe.Pointer(&req)); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s: %w", name, err)
	}
	return nil
}

// SetIPv4 assigns address and netmask.
func SetIPv4(name string, ip net.IP, mask net.IPMask) error {
	n, err := ifname(name)
	if err != nil {
		return err
	}
	if ip.To4() == nil || len(mask) != 4 {
		return fmt.Errorf("%s: need an IPv4 address and mask, got %v/%v", name, ip, mask)
	}
	addr := ifreqAddr{Name: n, Addr: inet(ip)}
	if err := ioctlSock(ioctlSIOCSIFADDR, unsafe.Pointer(&addr)); err != nil {
		return fmt.Errorf("SIOCSIFADDR %s %v: %w", name, ip, err)
	}
	m := ifreqAddr{Name: n, Addr: inet(net.IP(mask))}
	if err := ioctlSock(ioctlSIOCSIFNETMASK, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("SIOCSIFNETMASK %s %v: %w", name, net.IP(mask), err)
	}
	return nil
}

// AddDefaultRoute adds "default via gw". An existing default route is left.
func AddDefaultRoute(gw net.IP) error {
	rt := rtentry{
		Dst:     inet(net.IPv4zero),
		Gateway: inet(gw),
		Genmask: inet(net.IPv4zero),
		Flags:   rtfUp | rtfGateway,
	}
	if err := ioctlSock(ioctlSIOCADDRT, unsafe.Pointer(&rt)); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("SIOCADDRT default via %v: %w", gw, err)
	}
	return nil
}

// ResolvConf renders /etc/resolv.conf so Go's resolver finds a server
// given by name on the kernel line.
func ResolvConf(dns []net.IP, domain string) []byte {
	var b strings.Builder
	if domain != "" {
		fmt.Fprintf(&b, "search %s\n", domain)
	}
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return []byte(b.String())
}

// WriteResolvConf writes ResolvConf to path when there is a name server.
func WriteResolvConf(path string, dns []net.IP, domain string) error {
	if len(dns) == 0 {
		return nil
	}
	if err := os.WriteFile(path, ResolvConf(dns, domain), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}
