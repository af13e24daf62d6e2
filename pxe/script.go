package pxe

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
)

// Action is what a machine does when its iPXE script runs.
type Action string

// Actions of a Decision.
const (
	// ActionInstall boots the agent for a task (TaskID and boot Token set).
	ActionInstall Action = "install"
	// ActionDiscover boots the agent without a task: it reports its hardware
	// and waits for one.
	ActionDiscover Action = "discover"
	// ActionLocal leaves iPXE (exit 1): the firmware boots the next device,
	// the local disk. A completed machine gets this, never a reinstall loop.
	ActionLocal Action = "local"
)

// Decision is what lpmos wants one MAC to boot.
type Decision struct {
	Action Action
	TaskID string // ActionInstall: the task id (lowercase hex and '-')
	Token  string // ActionInstall: the single-use boot token ([A-Za-z0-9_-]) the agent exchanges for its session
}

// Script is everything an iPXE script is rendered from.
type Script struct {
	Decision
	// AgentURL is the base URL of the regional agent API (lpmos_client=).
	AgentURL string
	// KernelURL and InitrdURL are fetched by iPXE over HTTP (Debian's iPXE
	// has no HTTPS).
	KernelURL string
	InitrdURL string
	// ExtraArgs are appended to the kernel command line; each must match
	// [A-Za-z0-9_.,:/=+@-]+.
	ExtraArgs []string
	// SerialConsole is the serial console=<value> of the agent's kernel
	// line, e.g. ttyS1,115200n8; default DefaultSerialConsole.
	SerialConsole string
	// CAPin, when set, is the hex sha256 of the cluster CA certificate's
	// DER: the kernel line carries lpmos_ca=sha256:<CAPin> and the agent
	// trusts only that CA for AgentURL (https).
	CAPin string
}

// DefaultSerialConsole is the agent's serial console: the first port at
// the speed BMC serial-over-LAN usually runs (the kernel's default, 9600,
// garbles it).
const DefaultSerialConsole = "ttyS0,115200"

// ErrInvalid marks a value that may not be put into an iPXE script.
var ErrInvalid = errors.New("invalid value for iPXE script")

// iPXE expands ${...}, splits on spaces and treats these as syntax; none of
// them may reach a script from a value.
const scriptMeta = "\"'`$\\{}[];&|<>#"

// Character sets of the validated values.
const (
	lowerHex   = "0123456789abcdef"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	taskIDSet  = lowerHex + "-"
	tokenSet   = alnum + "_-"
	kernArgSet = alnum + "_.,:/=+@-"
)

// only reports whether s is 1..max bytes, all from set.
func only(s, set string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(set, s[i]) < 0 {
			return false
		}
	}
	return true
}

func validTaskID(id string) bool { return only(id, taskIDSet, 64) && id[0] != '-' }
func validToken(t string) bool   { return only(t, tokenSet, 256) }
func validArg(a string) bool     { return only(a, kernArgSet, 256) }

// checkURL accepts an absolute http(s) URL without user info, spaces, quotes
// or iPXE metacharacters.
func checkURL(what, raw string) error {
	if raw == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(raw) > 1024 {
		return fmt.Errorf("%w: %s is longer than 1024 bytes", ErrInvalid, what)
	}
	for _, r := range raw {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(scriptMeta, r) {
			return fmt.Errorf("%w: %s %q contains %q", ErrInvalid, what, raw, r)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: %s %q is not http(s)", ErrInvalid, what, raw)
	}
	if u.Host == "" || u.User != nil || u.Opaque != "" {
		return fmt.Errorf("%w: %s %q needs a host and no user info", ErrInvalid, what, raw)
	}
	return nil
}

// validate checks every value that RenderScript interpolates.
func (s *Script) validate() error {
	switch s.Action {
	case ActionLocal:
		return nil
	case ActionInstall:
		if !validTaskID(s.TaskID) {
			return fmt.Errorf("%w: task id %q (want [0-9a-f-])", ErrInvalid, s.TaskID)
		}
		if !validToken(s.Token) {
			return fmt.Errorf("%w: token (want [A-Za-z0-9_-], 1-256 bytes)", ErrInvalid)
		}
	case ActionDiscover:
		if s.TaskID != "" || s.Token != "" {
			return fmt.Errorf("%w: a discovery boot carries no task or token", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: unknown action %q", ErrInvalid, s.Action)
	}
	for _, u := range [...][2]string{{"agent URL", s.AgentURL}, {"kernel URL", s.KernelURL}, {"initrd URL", s.InitrdURL}} {
		if err := checkURL(u[0], u[1]); err != nil {
			return err
		}
	}
	if s.CAPin != "" {
		if len(s.CAPin) != 64 || !only(s.CAPin, lowerHex, 64) {
			return fmt.Errorf("%w: CA pin %q (want 64 lowercase hex digits)", ErrInvalid, s.CAPin)
		}
		if !strings.HasPrefix(s.AgentURL, "https://") {
			return fmt.Errorf("%w: a CA pin needs an https agent URL, not %q", ErrInvalid, s.AgentURL)
		}
	}
	if s.SerialConsole != "" && !validArg(s.SerialConsole) {
		return fmt.Errorf("%w: serial console %q (want e.g. ttyS0,115200)", ErrInvalid, s.SerialConsole)
	}
	for _, a := range s.ExtraArgs {
		if !validArg(a) {
			return fmt.Errorf("%w: kernel argument %q", ErrInvalid, a)
		}
	}
	return nil
}

// initrdName is the name iPXE gives the initramfs image; the kernel line
// refers to it with initrd=<name>, which UEFI (the kernel's EFI stub) needs
// and BIOS boots ignore.
const initrdName = "initrd"

// RenderScript renders the iPXE script for one machine. It returns an error
// wrapping ErrInvalid when any value could change the script's meaning.
//
// The same script works under BIOS and UEFI: the initramfs is loaded with
// `initrd --name initrd` and the kernel line carries `initrd=initrd`. The
// agent's address comes from iPXE's own DHCP result (ip=${ip}::${gateway}:
// ${netmask}:::off) and its MAC from ${mac}: iPXE expands those, never values
// from lpmos.
func RenderScript(s Script) (string, error) {
	if err := s.validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	if s.Action == ActionLocal {
		b.WriteString("echo lpmos: nothing to install, booting from local disk\n")
		// exit with a failure status: edk2 (OVMF, most UEFI servers)
		// treats a boot option that returns success as "show the boot
		// menu" and never tries the next option; a failure makes it move
		// on to the next boot option, the installed disk. SeaBIOS moves on
		// either way. e2e/pxe.sh proves both in real firmware.
		b.WriteString("exit 1\n")
		return b.String(), nil
	}
	args := []string{
		"initrd=" + initrdName,
		wire.ParamServer + "=" + s.AgentURL,
	}
	if s.CAPin != "" {
		args = append(args, wire.ParamCA+"="+wire.CAPinPrefix+s.CAPin)
	}
	if s.Action == ActionInstall {
		fmt.Fprintf(&b, "echo lpmos: booting the agent for task %s\n", s.TaskID)
		args = append(args, wire.ParamTaskID+"="+s.TaskID, wire.ParamToken+"="+s.Token)
	} else {
		b.WriteString("echo lpmos: booting the agent for discovery\n")
	}
	serial := s.SerialConsole
	if serial == "" {
		serial = DefaultSerialConsole
	}
	args = append(args,
		wire.ParamMAC+"=${mac}",
		"ip=${ip}::${gateway}:${netmask}:::off",
		// The last console is /dev/console: the serial port, where labs and
		// BMC serial-over-LAN read the agent.
		"console=tty0", "console="+serial, "panic=-1",
	)
	args = append(args, s.ExtraArgs...)
	fmt.Fprintf(&b, "kernel %s %s || goto lpmos_failed\n", s.KernelURL, strings.Join(args, " "))
	fmt.Fprintf(&b, "initrd --name %s %s || goto lpmos_failed\n", initrdName, s.InitrdURL)
	b.WriteString("boot || goto lpmos_failed\n")
	b.WriteString(":lpmos_failed\n")
	b.WriteString("echo lpmos: boot failed, rebooting in 10 s\n")
	b.WriteString("sleep 10\n")
	b.WriteString("reboot\n")
	return b.String(), nil
}
