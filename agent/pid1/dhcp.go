package pid1

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
)

// DHCP message types and options (RFC 2131, RFC 2132) the agent uses.
const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpDecline  = 4
	dhcpAck      = 5
	dhcpNak      = 6

	optSubnetMask   = 1
	optRouter       = 3
	optDNS          = 6
	optHostname     = 12
	optDomainName   = 15
	optRequestedIP  = 50
	optLeaseTime    = 51
	optMessageType  = 53
	optServerID     = 54
	optParamRequest = 55
	optMaxSize      = 57
	optVendorClass  = 60
	optClientID     = 61
	optEnd          = 255
	optPad          = 0

	bootRequest  = 1
	bootReply    = 2
	dhcpMagic    = 0x63825363
	flagBcast    = 0x8000
	dhcpFixedLen = 240 // BOOTP header + magic cookie
)

// Option is one DHCP option; order is kept when encoding.
type Option struct {
	Code byte
	Data []byte
}

// Message is a DHCP packet.
type Message struct {
	Op      byte
	XID     uint32
	Secs    uint16
	Flags   uint16
	CIAddr  net.IP
	YIAddr  net.IP
	SIAddr  net.IP
	GIAddr  net.IP
	CHAddr  net.HardwareAddr
	Options []Option
}

// Option returns the data of the first option with code, or nil.
func (m *Message) Option(code byte) []byte {
	for _, o := range m.Options {
		if o.Code == code {
			return o.Data
		}
	}
	return nil
}

// Type is the DHCP message type (option 53), 0 when absent.
func (m *Message) Type() byte {
	if d := m.Option(optMessageType); len(d) == 1 {
		return d[0]
	}
	return 0
}

// Marshal encodes the message; the result is padded to the 300-byte BOOTP
// minimum some relays still insist on.
func (m *Message) Marshal() []byte {
	b := make([]byte, dhcpFixedLen, 548)
	b[0] = m.Op
	b[1] = 1 // Ethernet
	b[2] = byte(len(m.CHAddr))
	binary.BigEndian.PutUint32(b[4:], m.XID)
	binary.BigEndian.PutUint16(b[8:], m.Secs)
	binary.BigEndian.PutUint16(b[10:], m.Flags)
	for i, ip := range []net.IP{m.CIAddr, m.YIAddr, m.SIAddr, m.GIAddr} {
		copy(b[12+4*i:16+4*i], ip.To4())
	}
	copy(b[28:44], m.CHAddr)
	binary.BigEndian.PutUint32(b[236:], dhcpMagic)
	for _, o := range m.Options {
		b = append(b, o.Code, byte(len(o.Data)))
		b = append(b, o.Data...)
	}
	b = append(b, optEnd)
	for len(b) < 300 {
		b = append(b, optPad)
	}
	return b
}

// ParseMessage decodes a DHCP packet.
func ParseMessage(b []byte) (*Message, error) {
	if len(b) < dhcpFixedLen {
		return nil, fmt.Errorf("dhcp: packet of %d bytes is too short", len(b))
	}
	if binary.BigEndian.Uint32(b[236:]) != dhcpMagic {
		return nil, errors.New("dhcp: no magic cookie")
	}
	hlen := int(b[2])
	if hlen > 16 {
		return nil, fmt.Errorf("dhcp: hardware address length %d", hlen)
	}
	m := &Message{
		Op:     b[0],
		XID:    binary.BigEndian.Uint32(b[4:]),
		Secs:   binary.BigEndian.Uint16(b[8:]),
		Flags:  binary.BigEndian.Uint16(b[10:]),
		CIAddr: net.IP(append([]byte(nil), b[12:16]...)),
		YIAddr: net.IP(append([]byte(nil), b[16:20]...)),
		SIAddr: net.IP(append([]byte(nil), b[20:24]...)),
		GIAddr: net.IP(append([]byte(nil), b[24:28]...)),
		CHAddr: net.HardwareAddr(append([]byte(nil), b[28:28+hlen]...)),
	}
	opts := b[dhcpFixedLen:]
	for i := 0; i < len(opts); {
		code := opts[i]
		if code == optEnd {
			break
		}
		if code == optPad {
			i++
			continue
		}
		if i+1 >= len(opts) || i+2+int(opts[i+1]) > len(opts) {
			return nil, fmt.Errorf("dhcp: option %d runs past the packet", code)
		}
		n := int(opts[i+1])
		m.Options = append(m.Options, Option{Code: code, Data: append([]byte(nil), opts[i+2:i+2+n]...)})
		i += 2 + n
	}
	return m, nil
}

// Lease is what the agent takes from a DHCPACK.
type Lease struct {
	IP       net.IP
	Mask     net.IPMask
	Router   net.IP
	DNS      []net.IP
	Server   net.IP
	Duration time.Duration
	Hostname string
	Domain   string
}

// LeaseFrom extracts the lease of an ACK.
func LeaseFrom(m *Message) (Lease, error) {
	l := Lease{IP: m.YIAddr.To4()}
	if l.IP == nil || l.IP.IsUnspecified() {
		return l, errors.New("dhcp: ACK without an address")
	}
	if d := m.Option(optSubnetMask); len(d) == 4 {
		l.Mask = net.IPMask(d)
	} else {
		l.Mask = l.IP.DefaultMask()
	}
	if d := m.Option(optRouter); len(d) >= 4 {
		l.Router = net.IP(d[:4])
	}
	d := m.Option(optDNS)
	for i := 0; i+4 <= len(d); i += 4 {
		l.DNS = append(l.DNS, net.IP(d[i:i+4]))
	}
	if d := m.Option(optServerID); len(d) == 4 {
		l.Server = net.IP(d)
	}
	if d := m.Option(optLeaseTime); len(d) == 4 {
		l.Duration = time.Duration(binary.BigEndian.Uint32(d)) * time.Second
	}
	l.Hostname = string(m.Option(optHostname))
	l.Domain = string(m.Option(optDomainName))
	return l, nil
}

// clientOptions are sent with DISCOVER and REQUEST.
func clientOptions(typ byte, mac net.HardwareAddr) []Option {
	return []Option{
		{optMessageType, []byte{typ}},
		{optClientID, append([]byte{1}, mac...)},
		{optMaxSize, []byte{0x05, 0xdc}}, // 1500
		{optVendorClass, []byte("lpmos-agent")},
		{optParamRequest, []byte{optSubnetMask, optRouter, optDNS, optHostname, optDomainName, optLeaseTime, optServerID}},
	}
}

// NewDiscover builds a DHCPDISCOVER. The broadcast flag asks the server to
// broadcast its answer: the stack drops unicast to an address it does not
// have yet.
func NewDiscover(xid uint32, mac net.HardwareAddr) *Message {
	return &Message{Op: bootRequest, XID: xid, Flags: flagBcast, CHAddr: mac, Options: clientOptions(dhcpDiscover, mac)}
}

// NewRequest builds the DHCPREQUEST that accepts offer.
func NewRequest(xid uint32, mac net.HardwareAddr, offer *Message) *Message {
	m := &Message{Op: bootRequest, XID: xid, Flags: flagBcast, CHAddr: mac, Options: clientOptions(dhcpRequest, mac)}
	m.Options = append(m.Options,
		Option{optRequestedIP, offer.YIAddr.To4()},
		Option{optServerID, offer.Option(optServerID)},
	)
	return m
}

// DHCP obtains a lease on ifname, retrying with backoff until ctx ends:
// the first attempt often goes out before the link has negotiated.
func DHCP(ctx context.Context, log *slog.Logger, ifname string, mac net.HardwareAddr) (Lease, error) {
	b := retry.Backoff{Min: time.Second, Max: 10 * time.Second}
	for attempt := 0; ; attempt++ {
		l, err := dhcpOnce(ctx, ifname, mac)
		if err == nil {
			return l, nil
		}
		if ctx.Err() != nil {
			return Lease{}, fmt.Errorf("dhcp on %s: %w (last error: %v)", ifname, ctx.Err(), err)
		}
		d := b.Delay(attempt)
		log.Warn("dhcp failed, retrying", "interface", ifname, "attempt", attempt+1, "retry_in", d.Round(time.Millisecond), "error", err)
		if err := retry.Sleep(ctx, d); err != nil {
			return Lease{}, fmt.Errorf("dhcp on %s: %w", ifname, err)
		}
	}
}

func dhcpOnce(ctx context.Context, ifname string, mac net.HardwareAddr) (Lease, error) {
	conn, err := dhcpConn(ifname)
	if err != nil {
		return Lease{}, err
	}
	defer conn.Close()
	xid := uint32(time.Now().UnixNano()) ^ binary.BigEndian.Uint32(append([]byte{0, 0}, mac[len(mac)-2:]...))
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	if _, err := conn.WriteTo(NewDiscover(xid, mac).Marshal(), bcast); err != nil {
		return Lease{}, fmt.Errorf("sending DISCOVER: %w", err)
	}
	offer, err := await(ctx, conn, xid, dhcpOffer)
	if err != nil {
		return Lease{}, fmt.Errorf("waiting for OFFER: %w", err)
	}
	if _, err := conn.WriteTo(NewRequest(xid, mac, offer).Marshal(), bcast); err != nil {
		return Lease{}, fmt.Errorf("sending REQUEST: %w", err)
	}
	ack, err := await(ctx, conn, xid, dhcpAck)
	if err != nil {
		return Lease{}, fmt.Errorf("waiting for ACK: %w", err)
	}
	return LeaseFrom(ack)
}

// dhcpConn opens UDP :68 bound to ifname with broadcast allowed; the
// interface has no address yet, so SO_BINDTODEVICE picks the way out.
func dhcpConn(ifname string) (net.PacketConn, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("dhcp socket: %w", err)
	}
	setup := func() error {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("SO_REUSEADDR: %w", err)
		}
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); err != nil {
			return fmt.Errorf("SO_BROADCAST: %w", err)
		}
		if err := syscall.BindToDevice(fd, ifname); err != nil {
			return fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, err)
		}
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: 68}); err != nil {
			return fmt.Errorf("bind :68: %w", err)
		}
		return nil
	}
	if err := setup(); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("dhcp socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dhcp")
	defer f.Close() // FilePacketConn dups the descriptor
	conn, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("dhcp socket: %w", err)
	}
	return conn, nil
}

// await reads until a reply of the wanted type for xid arrives (a NAK
// ends the attempt), for at most 4 seconds.
func await(ctx context.Context, conn net.PacketConn, xid uint32, want byte) (*Message, error) {
	deadline := time.Now().Add(4 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return nil, err
		}
		m, err := ParseMessage(buf[:n])
		if err != nil || m.Op != bootReply || m.XID != xid {
			continue // someone else's traffic
		}
		switch m.Type() {
		case want:
			return m, nil
		case dhcpNak:
			return nil, errors.New("server sent NAK")
		}
	}
}
