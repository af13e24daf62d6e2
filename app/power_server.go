package app

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

// serverPower runs `lpmos power ACTION TASK-or-MAC` through the control
// plane: status reads the region's last poll, the actions are queued for
// the region that owns the task.
func serverPower(cmd *cobra.Command, co *clientOptions, action, target string) error {
	c, err := co.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	id := target
	if !looksLikeTaskID(target) {
		mac, err := store.ParseMAC(target)
		if err != nil {
			return fmt.Errorf("%q is neither a task id nor a MAC address", target)
		}
		var list ui.TaskList
		if err := c.do(ctx, "GET", "/api/v1/tasks?mac="+url.QueryEscape(mac), nil, &list); err != nil {
			return fmt.Errorf("find the task of %s: %w", mac, err)
		}
		if len(list.Tasks) == 0 {
			return fmt.Errorf("no task for MAC %s: create one with lpmos task create --mac %s --bmc URL ...", mac, mac)
		}
		id = list.Tasks[0].ID // newest first
	}
	out := cmd.OutOrStdout()
	if action == "status" {
		var ans ui.PowerAnswer
		if err := c.do(ctx, "GET", "/api/v1/tasks/"+id+"/power", nil, &ans); err != nil {
			return fmt.Errorf("power status of task %s: %w", id, err)
		}
		if co.output == "json" {
			return printJSON(out, ans)
		}
		switch {
		case ans.Error != "" && ans.CheckedAt == nil:
			fmt.Fprintf(out, "%s (%s)\n", ans.State, ans.Error)
		case ans.Error != "":
			fmt.Fprintf(out, "%s (BMC not answering at %s: %s)\n", ans.State, ans.CheckedAt.Local().Format("15:04:05"), ans.Error)
		default:
			fmt.Fprintln(out, ans.State)
		}
		return nil
	}
	var ans ui.PowerActionAnswer
	if err := c.do(ctx, "POST", "/api/v1/tasks/"+id+"/power", ui.PowerActionRequest{Action: action}, &ans); err != nil {
		return fmt.Errorf("power %s of task %s: %w", action, id, err)
	}
	if co.output == "json" {
		return printJSON(out, ans)
	}
	fmt.Fprintf(out, "task %s: power %s requested; region %s performs it (the result is a task event: lpmos task get %s)\n", id, action, ans.RegionID, id)
	return nil
}

func looksLikeTaskID(s string) bool {
	if len(s) != 36 || strings.Count(s, "-") != 4 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-') {
			return false
		}
	}
	return true
}

// bmcFlags are task create's --bmc flags.
type bmcFlags struct{ o powerOptions }

func (b *bmcFlags) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&b.o.bmc, "bmc", "", "the machine's BMC, for hands-free power control: ipmi://user@host[:port] or redfish://user@host[:port][/system-id]")
	f.StringVar(&b.o.passwordFile, "bmc-password-file", "", "file whose first line is the BMC password (else $"+bmcPasswordEnv+")")
	f.BoolVar(&b.o.insecureTLS, "bmc-insecure-tls", false, "Redfish: do not verify the BMC's TLS certificate (self-signed BMCs)")
}

// input returns the BMC of the flags (nil without --bmc).
func (b *bmcFlags) input() (*store.BMCInput, error) {
	if b.o.bmc == "" {
		if b.o.passwordFile != "" {
			return nil, errors.New("--bmc-password-file without --bmc: give the BMC too")
		}
		return nil, nil
	}
	t, err := b.o.target()
	if err != nil {
		return nil, err
	}
	return &store.BMCInput{Protocol: t.Protocol, Address: t.Address, Username: t.Username, Password: t.Password,
		SystemID: t.SystemID, InsecureSkipVerify: t.InsecureTLS}, nil
}
