package app

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lpmos/lpmos/power"
	"github.com/spf13/cobra"
)

// bmcPasswordEnv holds the BMC password when --bmc-password-file is not
// given; the password is never a flag, so it never shows in ps or history.
const bmcPasswordEnv = "LPMOS_BMC_PASSWORD"

type powerOptions struct {
	bmc          string
	passwordFile string
	insecureTLS  bool
	timeout      time.Duration
}

func newPowerCmd() *cobra.Command {
	o := &powerOptions{}
	co := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "power",
		Short: "Power a machine on/off/cycle and set its next boot device through its BMC",
		Long: `Through the server (the task's BMC, performed by the region that owns the task,
recorded as a task event):

  lpmos power status|on|off|cycle|pxe|disk TASK-ID-or-MAC

Or directly from this host to a BMC: IPMI-over-LAN (RMCP+) or Redfish.

  --bmc ipmi://USER@HOST[:PORT]                  (port 623 by default)
  --bmc redfish://USER@HOST[:PORT][/SYSTEM-ID]   (HTTPS, port 443 by default;
                                                  the system id when the BMC has several)

The password comes from --bmc-password-file (first line) or LPMOS_BMC_PASSWORD,
never from the command line:

  LPMOS_BMC_PASSWORD_FILE=/etc/lpmos/bmc-r1.pw lpmos power status --bmc ipmi://admin@10.0.0.21`,
	}
	co.addFlags(cmd)
	f := cmd.PersistentFlags()
	f.StringVar(&o.bmc, "bmc", "", "the BMC: ipmi://user@host[:port] or redfish://user@host[:port][/system-id] (direct mode)")
	f.StringVar(&o.passwordFile, "bmc-password-file", "", "file whose first line is the BMC password (else $"+bmcPasswordEnv+")")
	f.BoolVar(&o.insecureTLS, "bmc-insecure-tls", false, "Redfish: do not verify the BMC's TLS certificate (self-signed BMCs)")
	f.DurationVar(&o.timeout, "bmc-timeout", power.DefaultTimeout, "bound for one power action (connect, login, command)")

	var persistent bool
	run := func(use, short, done string, fn func(*cobra.Command, power.Driver) error) *cobra.Command {
		action := strings.Fields(use)[0]
		return &cobra.Command{
			Use: use + " [TASK-ID|MAC]", Short: short, Args: cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if o.bmc == "" {
					if len(args) != 1 {
						return fmt.Errorf("name the machine: lpmos power %s TASK-ID-or-MAC (through the server), or --bmc URL (directly)", action)
					}
					if persistent {
						return errors.New("--persistent is for --bmc (direct) mode; through the server, pxe is for the next boot only")
					}
					return serverPower(cmd, co, action, args[0])
				}
				if len(args) != 0 {
					return fmt.Errorf("with --bmc the machine is the BMC: drop %q, or drop --bmc to go through the server", args[0])
				}
				b, err := o.target()
				if err != nil {
					return err
				}
				d, err := power.New(b)
				if err != nil {
					return err
				}
				if err := fn(cmd, d); err != nil {
					return err
				}
				if done != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", b, done)
				}
				return nil
			},
		}
	}
	pxe := run("pxe", "Boot from the network (PXE) at the next boot", "next boot from PXE", func(cmd *cobra.Command, d power.Driver) error {
		return d.SetBootDevice(cmd.Context(), power.PXE, !persistent)
	})
	pxe.Flags().BoolVar(&persistent, "persistent", false, "every boot, not only the next one (--bmc mode)")
	disk := run("disk", "Boot from disk at the next boot", "next boot from disk", func(cmd *cobra.Command, d power.Driver) error {
		return d.SetBootDevice(cmd.Context(), power.Disk, true)
	})
	cmd.AddCommand(
		run("status", "Print on or off", "", func(cmd *cobra.Command, d power.Driver) error {
			st, err := d.Status(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), st)
			return nil
		}),
		run("on", "Power on", "powered on", func(cmd *cobra.Command, d power.Driver) error { return d.On(cmd.Context()) }),
		run("off", "Power off hard (no OS shutdown)", "powered off", func(cmd *cobra.Command, d power.Driver) error { return d.Off(cmd.Context()) }),
		run("cycle", "Power-cycle (or power on a machine that is off)", "power cycled", func(cmd *cobra.Command, d power.Driver) error { return d.Cycle(cmd.Context()) }),
		pxe, disk,
		newPowerSetBMCCmd(o, co), // app/power_server.go
	)
	return cmd
}

// target builds the BMC from --bmc and the password source.
func (o *powerOptions) target() (power.BMC, error) {
	b, err := parseBMCURL(o.bmc)
	if err != nil {
		return b, err
	}
	b.InsecureTLS = o.insecureTLS
	b.Timeout = o.timeout
	switch {
	case o.passwordFile != "":
		raw, err := os.ReadFile(o.passwordFile)
		if err != nil {
			return b, fmt.Errorf("--bmc-password-file: %w", err)
		}
		b.Password, _, _ = strings.Cut(string(raw), "\n")
		b.Password = strings.TrimSuffix(b.Password, "\r")
		if b.Password == "" {
			return b, fmt.Errorf("--bmc-password-file %s: the first line is empty", o.passwordFile)
		}
	default:
		b.Password = os.Getenv(bmcPasswordEnv)
		if b.Password == "" {
			return b, fmt.Errorf("no BMC password: put it in a file and pass --bmc-password-file FILE, or set %s", bmcPasswordEnv)
		}
	}
	return b, nil
}

// parseBMCURL parses ipmi://user@host[:port] and
// redfish://user@host[:port][/system-id]. redfish+http:// is for BMC
// emulators without TLS.
func parseBMCURL(s string) (power.BMC, error) {
	var b power.BMC
	if s == "" {
		return b, errors.New("--bmc is required: ipmi://user@host[:port] or redfish://user@host[:port][/system-id]")
	}
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return b, fmt.Errorf("--bmc: not a URL like ipmi://user@host or redfish://user@host/system-id")
	}
	switch u.Scheme {
	case power.IPMI, power.Redfish, "redfish+http":
	default:
		return b, fmt.Errorf("--bmc %s: protocol %q: use ipmi://user@host or redfish://user@host", u.Redacted(), u.Scheme)
	}
	if _, set := u.User.Password(); set {
		return b, errors.New("--bmc: do not put the password in the URL (it shows in ps and shell history); use --bmc-password-file or " + bmcPasswordEnv)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return b, fmt.Errorf("--bmc %s: no ?query or #fragment", u.Redacted())
	}
	b.Username = u.User.Username()
	if b.Username == "" {
		return b, fmt.Errorf("--bmc %s: name the BMC user, e.g. %s://admin@%s", u.Redacted(), u.Scheme, u.Host)
	}
	if u.Host == "" {
		return b, fmt.Errorf("--bmc %s: the host is missing", u.Redacted())
	}
	b.Address = u.Host
	p := strings.Trim(u.Path, "/")
	switch u.Scheme {
	case power.IPMI:
		b.Protocol = power.IPMI
		if p != "" {
			return b, fmt.Errorf("--bmc %s: an IPMI BMC has no path", u.Redacted())
		}
	case power.Redfish, "redfish+http":
		b.Protocol = power.Redfish
		p = strings.TrimPrefix(p, "redfish/v1/Systems/")
		if strings.Contains(p, "/") {
			return b, fmt.Errorf("--bmc %s: the path is the system id only, e.g. redfish://admin@bmc/System.Embedded.1", u.Redacted())
		}
		b.SystemID = p
		if u.Scheme == "redfish+http" {
			b.Address = "http://" + u.Host
		}
	}
	return b, b.Validate()
}
