package app

import (
	"errors"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/spf13/cobra"
)

// staticNetFlags are `task create`'s flags for a static address of the
// installed system (the seed's network-config).
type staticNetFlags struct {
	address, gateway, mac string
	dns                   []string
}

func (n *staticNetFlags) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&n.address, "ip", "", "static address of the installed system with its prefix length, e.g. 10.0.0.5/24 (default: DHCP)")
	f.StringVar(&n.gateway, "gateway", "", "with --ip: default gateway")
	f.StringSliceVar(&n.dns, "dns", nil, "with --ip: DNS servers (comma list or repeated)")
	f.StringVar(&n.mac, "net-mac", "", "with --ip: MAC of the NIC to configure (default: --mac)")
}

// network is the task's network field, nil without --ip. The server
// validates the values and names the field at fault.
func (n *staticNetFlags) network() (*wire.StaticNetwork, error) {
	if n.address == "" {
		if n.gateway != "" || len(n.dns) > 0 || n.mac != "" {
			return nil, errors.New("--gateway, --dns and --net-mac configure a static address: add --ip ADDRESS/PREFIX (e.g. --ip 10.0.0.5/24)")
		}
		return nil, nil
	}
	return &wire.StaticNetwork{Address: n.address, Gateway: n.gateway, DNS: n.dns, MAC: n.mac}, nil
}
