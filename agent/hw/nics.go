package hw

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"

	"github.com/lpmos/lpmos/agent/wire"
)

// NICs lists the physical interfaces of root/sys/class/net: those with a
// "device" link. Loopback, bridges, bonds, veth and tun devices have none.
func NICs(root string) ([]wire.NIC, error) {
	dir := filepath.Join(root, "sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("nics: %w", err)
	}
	nics := []wire.NIC{}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if name == "lo" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name, "device")); err != nil {
			continue
		}
		n, err := nic(root, name)
		nics = append(nics, n)
		if err != nil {
			errs = append(errs, fmt.Errorf("nic %s: %w", name, err))
		}
	}
	sort.Slice(nics, func(i, j int) bool { return nics[i].Name < nics[j].Name })
	return nics, errors.Join(errs...)
}

func nic(root, name string) (wire.NIC, error) {
	base := filepath.Join("sys/class/net", name)
	n := wire.NIC{Name: name}
	var errs []error
	if addr := readTrim(root, base+"/address"); addr != "" {
		if hw, err := net.ParseMAC(addr); err != nil {
			errs = append(errs, fmt.Errorf("address: %w", err))
		} else {
			n.MAC = hw.String()
		}
	}
	if target, err := os.Readlink(filepath.Join(root, base, "device/driver")); err == nil {
		n.Driver = filepath.Base(target)
	}
	// The kernel answers -1 (or EINVAL on read) when the link is down or the
	// driver does not know its speed (virtio): both mean "unknown".
	if v, ok, err := readInt(root, base+"/speed"); err != nil {
		if !errors.Is(err, os.ErrInvalid) && !isEINVAL(err) {
			errs = append(errs, fmt.Errorf("speed: %w", err))
		}
	} else if ok && v > 0 {
		n.SpeedMbps = int(v)
	}
	// carrier is unreadable while the interface is administratively down;
	// operstate is the fallback.
	if v, ok, err := readInt(root, base+"/carrier"); err == nil && ok {
		n.Link = v == 1
	} else {
		n.Link = readTrim(root, base+"/operstate") == "up"
	}
	return n, errors.Join(errs...)
}
