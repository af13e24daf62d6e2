package pxe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
)

// A small DHCPv4 codec (RFC 2131/2132). It decodes only what the server needs
// and rejects anything it cannot trust; every length is checked before use so
// arbitrary bytes from the wire never panic (see FuzzHandle).

const (
	opBootRequest = 1
	opBootReply   = 2

	htypeEthernet = 1

	dhcpHeaderLen  = 236 // fixed BOOTP header, up to and excluding the cookie
	dhcpMinLen     = dhcpHeaderLen + 4
	bootpMinLen    = 300 // RFC 951: some relays drop shorter packets
	maxPacketLen   = 1500
	flagBroadcast  = 0x8000
	snameLen       = 64
	fileLen        = 128
	dhcpMagic      = 0x63825363
	clientPort     = 68
	serverPort     = 67
	pxeServicePort = 4011
)

// DHCP message types (option 53).
type msgType byte

const (
	msgDiscover msgType = 1
	msgOffer    msgType = 2
	msgRequest  msgType = 3
	msgDecline  msgType = 4
	msgAck      msgType = 5
	msgNak      msgType = 6
	msgRelease  msgType = 7
	msgInform   msgType = 8
)

func (m msgType) String() string {
	switch m {
	case msgDiscover:
		return "DISCOVER"
	case msgOffer:
		return "OFFER"
	case msgRequest:
		return "REQUEST"
	case msgDecline:
		return "DECLINE"
	case msgAck:
		return "ACK"
	case msgNak:
		return "NAK"
	case msgRelease:
		return "RELEASE"
	case msgInform:
		return "INFORM"
	}
	return fmt.Sprintf("type%d", byte(m))
}

// Option codes used here.
const (
	optPad            = 0
	optSubnetMask     = 1
	optRouter         = 3
	optDNS            = 6
	optRequestedIP    = 50
	optLeaseTime      = 51
	optMessageType    = 53
	optServerID       = 54
	optParamRequest   = 55
	optMessage        = 56
	optRenewalTime    = 58
	optRebindingTime  = 59
	optVendorClass    = 60
	optUserClass      = 77
	optClientArch     = 93
	optClientUUID     = 97
	optVendorSpecific = 43
	optEnd            = 255
	pxeDiscoveryCtl   = 6 // option 43 sub-option PXE_DISCOVERY_CONTROL
	pxeDiscoverySkip  = 8 // bit 3: use the boot file name, skip discovery
	vendorPXEClient   = "PXEClient"
	vendorHTTPClient  = "HTTPClient"
	userClassIPXE     = "iPXE"
)

var errMalformed = errors.New("malformed DHCP packet")

// packet is a decoded DHCPv4 message.
type packet struct {
	op      byte
	htype   byte
	hlen    byte
	hops    byte
	xid     uint32
	secs    uint16
	flags   uint16
	ciaddr  net.IP
	yiaddr  net.IP
	siaddr  net.IP
	giaddr  net.IP
	chaddr  [16]byte
	sname   string
	file    string
	options options
}

// options keeps the options in the order they were set (encoding order).
type options struct {
	codes []byte
	vals  map[byte][]byte
}

func (o *options) get(code byte) ([]byte, bool) {
	v, ok := o.vals[code]
	return v, ok
}

func (o *options) set(code byte, v []byte) {
	if o.vals == nil {
		o.vals = make(map[byte][]byte)
	}
	if _, ok := o.vals[code]; !ok {
		o.codes = append(o.codes, code)
	}
	o.vals[code] = v
}

// parsePacket decodes a DHCPv4 message. It returns errMalformed (wrapped) for
// anything truncated or inconsistent.
func parsePacket(b []byte) (*packet, error) {
	if len(b) < dhcpMinLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", errMalformed, len(b), dhcpMinLen)
	}
	if len(b) > maxPacketLen*2 {
		return nil, fmt.Errorf("%w: %d bytes is too long", errMalformed, len(b))
	}
	p := &packet{
		op:     b[0],
		htype:  b[1],
		hlen:   b[2],
		hops:   b[3],
		xid:    binary.BigEndian.Uint32(b[4:8]),
		secs:   binary.BigEndian.Uint16(b[8:10]),
		flags:  binary.BigEndian.Uint16(b[10:12]),
		ciaddr: net.IP(bytes.Clone(b[12:16])),
		yiaddr: net.IP(bytes.Clone(b[16:20])),
		siaddr: net.IP(bytes.Clone(b[20:24])),
		giaddr: net.IP(bytes.Clone(b[24:28])),
	}
	copy(p.chaddr[:], b[28:44])
	if p.hlen > 16 {
		return nil, fmt.Errorf("%w: hardware address length %d", errMalformed, p.hlen)
	}
	p.sname = cString(b[44 : 44+snameLen])
	p.file = cString(b[108 : 108+fileLen])
	if binary.BigEndian.Uint32(b[236:240]) != dhcpMagic {
		return nil, fmt.Errorf("%w: bad magic cookie", errMalformed)
	}
	if err := parseOptions(&p.options, b[240:]); err != nil {
		return nil, err
	}
	return p, nil
}

func parseOptions(o *options, b []byte) error {
	for i := 0; i < len(b); {
		code := b[i]
		i++
		switch code {
		case optPad:
			continue
		case optEnd:
			return nil
		}
		if i >= len(b) {
			return fmt.Errorf("%w: option %d has no length", errMalformed, code)
		}
		n := int(b[i])
		i++
		if i+n > len(b) {
			return fmt.Errorf("%w: option %d length %d runs past the packet", errMalformed, code, n)
		}
		v := b[i : i+n]
		i += n
		// RFC 3396: a repeated option is concatenated.
		if old, ok := o.get(code); ok {
			o.set(code, append(bytes.Clone(old), v...))
		} else {
			o.set(code, bytes.Clone(v))
		}
	}
	// A packet without the End option is truncated.
	return fmt.Errorf("%w: no end option", errMalformed)
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// mac returns the client hardware address (Ethernet only).
func (p *packet) mac() net.HardwareAddr {
	return net.HardwareAddr(bytes.Clone(p.chaddr[:p.hlen]))
}

func (p *packet) msgType() msgType {
	v, ok := p.options.get(optMessageType)
	if !ok || len(v) != 1 {
		return 0
	}
	return msgType(v[0])
}

func (p *packet) optString(code byte) string {
	v, _ := p.options.get(code)
	return string(v)
}

func (p *packet) optIP(code byte) net.IP {
	v, ok := p.options.get(code)
	if !ok || len(v) != 4 {
		return nil
	}
	return net.IP(bytes.Clone(v))
}

// clientArch returns the first architecture of option 93 (RFC 4578), and
// whether the option was present and well formed.
func (p *packet) clientArch() (uint16, bool) {
	v, ok := p.options.get(optClientArch)
	if !ok || len(v) < 2 || len(v)%2 != 0 {
		return 0, false
	}
	return binary.BigEndian.Uint16(v[:2]), true
}

// userClasses returns the user class option 77 values. iPXE sends the raw
// string "iPXE"; RFC 3004 clients send length-prefixed strings: accept both.
func (p *packet) userClasses() []string {
	v, ok := p.options.get(optUserClass)
	if !ok || len(v) == 0 {
		return nil
	}
	var out []string
	for i := 0; i < len(v); {
		n := int(v[i])
		if n == 0 || i+1+n > len(v) {
			return []string{string(v)} // not RFC 3004: the raw string
		}
		out = append(out, string(v[i+1:i+1+n]))
		i += 1 + n
	}
	return out
}

func (p *packet) isIPXE() bool {
	for _, uc := range p.userClasses() {
		if uc == userClassIPXE {
			return true
		}
	}
	return false
}

// marshal encodes p, padding to the BOOTP minimum length.
func (p *packet) marshal() []byte {
	b := make([]byte, dhcpMinLen, 576)
	b[0], b[1], b[2], b[3] = p.op, p.htype, p.hlen, p.hops
	binary.BigEndian.PutUint32(b[4:8], p.xid)
	binary.BigEndian.PutUint16(b[8:10], p.secs)
	binary.BigEndian.PutUint16(b[10:12], p.flags)
	copy(b[12:16], ip4(p.ciaddr))
	copy(b[16:20], ip4(p.yiaddr))
	copy(b[20:24], ip4(p.siaddr))
	copy(b[24:28], ip4(p.giaddr))
	copy(b[28:44], p.chaddr[:])
	copy(b[44:44+snameLen-1], p.sname)
	copy(b[108:108+fileLen-1], p.file)
	binary.BigEndian.PutUint32(b[236:240], dhcpMagic)
	for _, code := range p.options.codes {
		v := p.options.vals[code]
		// RFC 3396: split long values into several options of the same code.
		for len(v) > 255 {
			b = append(b, code, 255)
			b = append(b, v[:255]...)
			v = v[255:]
		}
		b = append(b, code, byte(len(v)))
		b = append(b, v...)
	}
	b = append(b, optEnd)
	for len(b) < bootpMinLen {
		b = append(b, optPad)
	}
	return b
}

// ip4 returns the 4-byte form of ip, or 0.0.0.0.
func ip4(ip net.IP) net.IP {
	if v := ip.To4(); v != nil {
		return v
	}
	return net.IPv4zero.To4()
}

// hasPrefixFold reports whether s starts with prefix, ignoring case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
