package store

import (
	"fmt"
	"net/netip"

	"github.com/lpmos/lpmos/agent/wire"
)

// maxDNSServers bounds network.dns (glibc reads three; a few spare).
const maxDNSServers = 8

// validateNetwork checks a task's static address and canonicalizes it:
// address is a host address with a prefix length, the gateway (optional)
// lies in its subnet, DNS servers are IP addresses, and the MAC defaults
// to the task's target MAC. Errors name the field.
func validateNetwork(n *wire.StaticNetwork, targetMAC string) error {
	if n == nil {
		return nil
	}
	pfx, err := netip.ParsePrefix(n.Address)
	if err != nil {
		return fmt.Errorf("%w: network.address %q: want an address with a prefix length, like 10.0.0.5/24", ErrInvalid, truncate(n.Address, 64))
	}
	addr := pfx.Addr()
	if addr.Zone() != "" || addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback() {
		return fmt.Errorf("%w: network.address %q is not a host address", ErrInvalid, n.Address)
	}
	if addr.Is4() && pfx.Bits() < 31 && (addr == pfx.Masked().Addr() || addr == lastAddr(pfx)) {
		return fmt.Errorf("%w: network.address %q is the network or broadcast address of its subnet", ErrInvalid, n.Address)
	}
	n.Address = pfx.String()
	if n.Gateway != "" {
		gw, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || gw.Zone() != "":
			return fmt.Errorf("%w: network.gateway %q is not an IP address", ErrInvalid, truncate(n.Gateway, 64))
		case gw.Is4() != addr.Is4():
			return fmt.Errorf("%w: network.gateway %s and network.address %s are not the same IP version", ErrInvalid, gw, pfx)
		case !pfx.Masked().Contains(gw) && !(gw.Is6() && gw.IsLinkLocalUnicast()):
			return fmt.Errorf("%w: network.gateway %s is outside network.address's subnet %s", ErrInvalid, gw, pfx.Masked())
		case gw == addr:
			return fmt.Errorf("%w: network.gateway %s is network.address itself", ErrInvalid, gw)
		}
		n.Gateway = gw.String()
	}
	if len(n.DNS) > maxDNSServers {
		return fmt.Errorf("%w: network.dns has %d servers, at most %d", ErrInvalid, len(n.DNS), maxDNSServers)
	}
	for i, d := range n.DNS {
		ip, err := netip.ParseAddr(d)
		if err != nil || ip.Zone() != "" {
			return fmt.Errorf("%w: network.dns %q is not an IP address", ErrInvalid, truncate(d, 64))
		}
		n.DNS[i] = ip.String()
	}
	if n.MAC == "" {
		n.MAC = targetMAC
	}
	mac, err := ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("%w: network.mac %q is not a MAC address like 00:1a:2b:3c:4d:5e", ErrInvalid, truncate(n.MAC, 64))
	}
	n.MAC = mac
	return nil
}

// lastAddr is the highest address of an IPv4 prefix (its broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<host - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
