package pid1

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/lpmos/lpmos/agent/config"
	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/wire"
)

// PickNIC chooses the boot NIC: the ip= device, else the one with the
// kernel-line MAC, else the first with a link, else the first.
func PickNIC(nics []wire.NIC, device, mac string) (wire.NIC, error) {
	if len(nics) == 0 {
		return wire.NIC{}, fmt.Errorf("no network interface found (driver module missing?)")
	}
	for _, n := range nics {
		if (device != "" && n.Name == device) || (device == "" && mac != "" && n.MAC == mac) {
			return n, nil
		}
	}
	if device != "" {
		return wire.NIC{}, fmt.Errorf("interface %s from ip= not found", device)
	}
	for _, n := range nics {
		if n.Link {
			return n, nil
		}
	}
	return nics[0], nil
}

// SetupNetwork brings the boot NIC up as ip= says (DHCP without ip=) and
// returns it. Drivers probe asynchronously after their module loads, so it
// waits up to 15 s for an interface to appear.
func SetupNetwork(ctx context.Context, log *slog.Logger, ip config.IP, mac string) (wire.NIC, error) {
	if err := LinkUp("lo"); err != nil {
		log.Warn("loopback", "error", err)
	}
	var nics []wire.NIC
	for deadline := time.Now().Add(15 * time.Second); ; {
		nics, _ = hw.NICs("/")
		if _, err := PickNIC(nics, ip.Device, mac); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	nic, err := PickNIC(nics, ip.Device, mac)
	if err != nil {
		return nic, err
	}
	if ip.Mode == config.IPOff {
		log.Info("ip=off: leaving the network as it is", "interface", nic.Name)
		return nic, nil
	}
	if err := LinkUp(nic.Name); err != nil {
		return nic, err
	}
	switch ip.Mode {
	case config.IPStatic:
		log.Info("configuring from ip=", "interface", nic.Name, "address", ip.Client, "netmask", net.IP(ip.Netmask), "gateway", ip.Gateway)
		if err := SetIPv4(nic.Name, ip.Client, ip.Netmask); err != nil {
			return nic, err
		}
		if ip.Gateway != nil {
			if err := AddDefaultRoute(ip.Gateway); err != nil {
				return nic, err
			}
		}
		return nic, WriteResolvConf("/etc/resolv.conf", ip.DNS, "")
	default:
		hwaddr, err := net.ParseMAC(nic.MAC)
		if err != nil {
			return nic, fmt.Errorf("interface %s: %w", nic.Name, err)
		}
		dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		lease, err := DHCP(dctx, log, nic.Name, hwaddr)
		if err != nil {
			return nic, err
		}
		log.Info("dhcp lease", "interface", nic.Name, "address", lease.IP, "netmask", net.IP(lease.Mask),
			"router", lease.Router, "server", lease.Server, "lease", lease.Duration)
		if err := SetIPv4(nic.Name, lease.IP, lease.Mask); err != nil {
			return nic, err
		}
		if lease.Router != nil {
			if err := AddDefaultRoute(lease.Router); err != nil {
				return nic, err
			}
		}
		return nic, WriteResolvConf("/etc/resolv.conf", lease.DNS, lease.Domain)
	}
}
