package app

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

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

// newPowerSetBMCCmd stores a BMC on a task (by id) or a discovered machine
// (by MAC: its next task takes it), through the server.
func newPowerSetBMCCmd(o *powerOptions, co *clientOptions) *cobra.Command {
	var remove bool
	cmd := &cobra.Command{
		Use:   "set-bmc TASK-ID|MAC --bmc URL --bmc-password-file FILE",
		Short: "Give a task (or a discovered machine, by MAC) its BMC; the password is sealed in etcd",
		Example: "  lpmos power set-bmc 52:54:00:12:34:56 --bmc ipmi://admin@10.0.0.21 --bmc-password-file bmc.pw\n" +
			"  lpmos power set-bmc TASK-ID --remove",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/tasks/" + args[0] + "/bmc"
			if !looksLikeTaskID(args[0]) {
				mac, err := store.ParseMAC(args[0])
				if err != nil {
					return fmt.Errorf("%q is neither a task id nor a MAC address", args[0])
				}
				path = "/api/v1/machines/" + mac + "/bmc"
			}
			c, err := co.client()
			if err != nil {
				return err
			}
			if remove {
				if o.bmc != "" {
					return errors.New("--remove takes no --bmc")
				}
				if err := c.do(cmd.Context(), "DELETE", path, nil, nil); err != nil {
					return fmt.Errorf("remove BMC of %s: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: BMC removed\n", args[0])
				return nil
			}
			if o.bmc == "" {
				return errors.New("--bmc is required: ipmi://user@host[:port] or redfish://user@host[:port][/system-id]")
			}
			t, err := o.target()
			if err != nil {
				return err
			}
			in := store.BMCInput{Protocol: t.Protocol, Address: t.Address, Username: t.Username, Password: t.Password,
				SystemID: t.SystemID, InsecureSkipVerify: t.InsecureTLS}
			var info store.BMCInfo
			if err := c.do(cmd.Context(), "PUT", path, in, &info); err != nil {
				return fmt.Errorf("set BMC of %s: %w", args[0], err)
			}
			if co.output == "json" {
				return printJSON(cmd.OutOrStdout(), info)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: BMC set to %s (user %s)\n", args[0], info.String(), info.Username)
			return nil
		},
	}
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the BMC instead")
	return cmd
}

// printPower prints a task's BMC (never its password) and power state.
func printPower(w io.Writer, t store.Task) {
	if t.BMC == nil {
		return
	}
	fmt.Fprintf(w, "\nbmc: %s, user %s", t.BMC.String(), t.BMC.Username)
	switch p := t.Power; {
	case p == nil:
		fmt.Fprintln(w, "; power: not polled yet")
	case p.Error != "":
		fmt.Fprintf(w, "; power: %s, BMC not answering (%s): %s\n", p.State, p.CheckedAt.Local().Format(time.DateTime), p.Error)
	default:
		fmt.Fprintf(w, "; power: %s (%s)\n", p.State, p.CheckedAt.Local().Format(time.DateTime))
	}
}
