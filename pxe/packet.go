package pxe

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// DHCPv4 packets are decoded and encoded with github.com/insomniacslk/dhcp/dhcpv4;
// this file holds the few checks and PXE helpers it does not provide.

const (
	maxPacketLen   = 1500
	clientPort     = 68
	serverPort     = 67
	pxeServicePort = 4011

	pxeDiscoveryCtl  = 6   // option 43 sub-option PXE_DISCOVERY_CONTROL
	pxeDiscoverySkip = 8   // bit 3: use the boot file name, skip discovery
	pxeVendorEnd     = 255 // end of the option 43 sub-options
	vendorPXEClient  = "PXEClient"
	vendorHTTPClient = "HTTPClient"
	userClassIPXE    = "iPXE"
)

var errMalformed = errors.New("malformed DHCP packet")

// parsePacket decodes a DHCPv4 message. It returns errMalformed (wrapped)
// for anything truncated or inconsistent: whatever dhcpv4.FromBytes rejects
// (short header, bad magic cookie, an option running past the end, no End
// option), plus what FromBytes tolerates but a server must not trust.
func parsePacket(b []byte) (*dhcpv4.DHCPv4, error) {
	if len(b) > maxPacketLen*2 {
		return nil, fmt.Errorf("%w: %d bytes is too long", errMalformed, len(b))
	}
	// FromBytes silently clamps hlen to 16; a larger one is not DHCP.
	if len(b) > 2 && b[2] > dhcpv4.MaxHWAddrLen {
		return nil, fmt.Errorf("%w: hardware address length %d", errMalformed, b[2])
	}
	p, err := dhcpv4.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return p, nil
}

// clientArch returns the first architecture of option 93 (RFC 4578), and
// whether the option was present and well formed.
func clientArch(p *dhcpv4.DHCPv4) (iana.Arch, bool) {
	if a := p.ClientArch(); len(a) > 0 {
		return a[0], true
	}
	return 0, false
}

// isIPXE reports whether the client is iPXE. iPXE sends the raw string
// "iPXE" in option 77; RFC 3004 clients send length-prefixed strings:
// UserClass accepts both.
func isIPXE(p *dhcpv4.DHCPv4) bool {
	for _, uc := range p.UserClass() {
		if uc == userClassIPXE {
			return true
		}
	}
	return false
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
