package app

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
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

// printInstallDetails adds to `task get` the static address the task
// gives and the partition table the install left on disk.
func printInstallDetails(w io.Writer, t store.Task) {
	if n := t.Spec.Network; n != nil {
		fmt.Fprintf(w, "\nnetwork: %s", n.Address)
		if n.Gateway != "" {
			fmt.Fprintf(w, " via %s", n.Gateway)
		}
		if len(n.DNS) > 0 {
			fmt.Fprintf(w, ", dns %s", strings.Join(n.DNS, " "))
		}
		fmt.Fprintf(w, " on %s\n", n.MAC)
	}
	if pt := t.Partitions; pt != nil && len(pt.Partitions) > 0 {
		fmt.Fprintf(w, "\npartitions left on disk (attempt %d):\n", pt.Attempt)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\tNAME\tTYPE\tSTART\tSIZE\tFS\tROLE")
		dash := func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		}
		for _, p := range pt.Partitions {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%d\t%s\t%s\n", p.Number, dash(p.Name), p.Type, p.StartBytes, p.SizeBytes, dash(p.FS), dash(p.Role))
		}
		_ = tw.Flush()
	}
}
