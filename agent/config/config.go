// Package config builds the agent's configuration from the kernel command
// line (PID-1 mode: the iPXE script passes lpmos_client=, lpmos_task=,
// lpmos_token=, lpmos_mac= and ip=) or from flags and environment when the
// agent is run by hand. Both parsers take their input as arguments so they
// are testable; nothing here reads files or the process environment itself.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
)

// DefaultServerURL is the seed's regional client address.
const DefaultServerURL = "http://localhost:8081"

// Config is everything the agent needs to run.
type Config struct {
	ServerURL string // base URL of the regional agent API
	TaskID    string // may be empty: the approval answer names the task
	Token     string // boot token (lpmos_token), exchanged once for a session; empty for discovery
	MAC       string // boot NIC, canonical lower-case; empty = pick from hardware
	Disk      string // target block device or regular file; empty = demo (by hand) or auto (PID 1)
	PowerOff  bool   // power off instead of rebooting at the end (PID 1 only)
	IP        IP     // boot NIC addressing from ip=
	// CAPin is lpmos_ca= (sha256:<hex of the CA certificate's DER>): the
	// agent API is reached over HTTPS and its certificate must chain to
	// that CA. Empty: no pinning (plain HTTP, a lab's explicit choice).
	CAPin string

	// Run-by-hand only.
	HardwareJSON bool   // print the hardware report as JSON and exit
	SysRoot      string // root of the /proc and /sys trees to read ("/")
}

// IPMode says how the boot NIC gets its address.
type IPMode string

// The ip= modes the agent acts on.
const (
	IPUnset  IPMode = ""       // no ip=: DHCP in PID-1 mode
	IPDHCP   IPMode = "dhcp"   // ip=dhcp (or on/any/bootp, or autoconf field dhcp)
	IPStatic IPMode = "static" // ip=<client>:...:off
	IPOff    IPMode = "off"    // ip=off/none: the network is already up or not wanted
)

// IP is the kernel's ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>.
type IP struct {
	Mode     IPMode
	Client   net.IP
	Server   net.IP
	Gateway  net.IP
	Netmask  net.IPMask
	Hostname string
	Device   string
	DNS      []net.IP
}

// ParseCmdline reads the agent's parameters from a kernel command line.
// Unknown parameters are ignored; the ones the agent needs are validated.
func ParseCmdline(cmdline string) (Config, error) {
	cfg := Config{SysRoot: "/"}
	var bootif string
	for _, tok := range SplitCmdline(cmdline) {
		key, val, _ := strings.Cut(tok, "=")
		switch key {
		case wire.ParamServer:
			cfg.ServerURL = val
		case wire.ParamTaskID:
			cfg.TaskID = val
		case wire.ParamToken:
			cfg.Token = val
		case wire.ParamMAC:
			cfg.MAC = val
		case wire.ParamDisk:
			cfg.Disk = val
		case wire.ParamCA:
			cfg.CAPin = val
		case wire.ParamPowerOff:
			cfg.PowerOff = val == "" || val == "1" || val == "true" || val == "yes"
		case "BOOTIF":
			// pxelinux/iPXE form: 01-aa-bb-cc-dd-ee-ff (01 = Ethernet).
			bootif = strings.ReplaceAll(strings.TrimPrefix(val, "01-"), "-", ":")
		case "ip":
			ip, err := ParseIP(val)
			if err != nil {
				return cfg, fmt.Errorf("kernel command line: %w", err)
			}
			cfg.IP = ip
		}
	}
	if cfg.MAC == "" {
		cfg.MAC = bootif
	}
	if cfg.ServerURL == "" {
		return cfg, fmt.Errorf("kernel command line: no %s= (the regional agent API URL)", wire.ParamServer)
	}
	return cfg, cfg.normalize()
}

// SplitCmdline splits a kernel command line like the kernel does: on
// whitespace, with double quotes protecting spaces (param="a b" -> param=a b).
func SplitCmdline(s string) []string {
	var (
		out     []string
		cur     strings.Builder
		inQuote bool
		have    bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// ParseIP parses the value of the kernel's ip= parameter.
func ParseIP(v string) (IP, error) {
	switch v {
	case "", "dhcp", "on", "any", "bootp", "rarp", "both":
		return IP{Mode: IPDHCP}, nil
	case "off", "none":
		return IP{Mode: IPOff}, nil
	}
	if strings.Contains(v, "[") {
		return IP{}, fmt.Errorf("ip=%s: IPv6 addresses are not supported", v)
	}
	f := strings.Split(v, ":")
	for len(f) < 9 {
		f = append(f, "")
	}
	var (
		ip  IP
		err error
	)
	if ip.Client, err = parseIPv4("client", f[0]); err != nil {
		return IP{}, fmt.Errorf("ip=%s: %w", v, err)
	}
	if ip.Server, err = parseIPv4("server", f[1]); err != nil {
		return IP{}, fmt.Errorf("ip=%s: %w", v, err)
	}
	if ip.Gateway, err = parseIPv4("gateway", f[2]); err != nil {
		return IP{}, fmt.Errorf("ip=%s: %w", v, err)
	}
	if ip.Netmask, err = parseMask(f[3]); err != nil {
		return IP{}, fmt.Errorf("ip=%s: %w", v, err)
	}
	ip.Hostname, ip.Device = f[4], f[5]
	for _, d := range f[7:9] {
		dns, err := parseIPv4("dns", d)
		if err != nil {
			return IP{}, fmt.Errorf("ip=%s: %w", v, err)
		}
		if dns != nil {
			ip.DNS = append(ip.DNS, dns)
		}
	}
	switch auto := f[6]; auto {
	case "", "off", "none":
		if ip.Client == nil {
			if auto == "" {
				// ip=::::host:eth0 with nothing else: the kernel autoconfigures.
				ip.Mode = IPDHCP
				return ip, nil
			}
			return IP{}, fmt.Errorf("ip=%s: static configuration without a client address", v)
		}
		ip.Mode = IPStatic
		if ip.Netmask == nil {
			ip.Netmask = ip.Client.DefaultMask()
		}
	case "dhcp", "on", "any", "bootp", "rarp", "both":
		ip.Mode = IPDHCP
	default:
		return IP{}, fmt.Errorf("ip=%s: unknown autoconf %q", v, auto)
	}
	return ip, nil
}

func parseIPv4(what, s string) (net.IP, error) {
	if s == "" {
		return nil, nil
	}
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return nil, fmt.Errorf("%s %q is not an IPv4 address", what, s)
	}
	return ip, nil
}

// parseMask accepts a dotted mask (the kernel's form, and iPXE's
// ${netmask}) or a prefix length.
func parseMask(s string) (net.IPMask, error) {
	if s == "" {
		return nil, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 32 {
			return nil, fmt.Errorf("netmask /%d out of range", n)
		}
		return net.CIDRMask(n, 32), nil
	}
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return nil, fmt.Errorf("netmask %q is not a dotted mask or a prefix length", s)
	}
	m := net.IPMask(ip)
	if ones, bits := m.Size(); ones == 0 && bits == 0 {
		return nil, fmt.Errorf("netmask %q is not contiguous", s)
	}
	return m, nil
}

// FromArgs parses the command line of an agent run by hand. getenv supplies
// LPMOS_AGENT_SERVER (or the seed's REGIONAL_CLIENT_URL), LPMOS_AGENT_TASK,
// LPMOS_AGENT_TOKEN and LPMOS_AGENT_CA_PIN (a token in the environment stays
// out of ps output). The prefix keeps them apart from the lpmos CLI's
// LPMOS_TOKEN (the admin token), which the agent never reads. Flags win
// over env.
func FromArgs(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	fs := flag.NewFlagSet("lpmos-agent", flag.ContinueOnError)
	fs.SetOutput(output)
	server := getenv("LPMOS_AGENT_SERVER")
	if server == "" {
		server = getenv("REGIONAL_CLIENT_URL")
	}
	if server == "" {
		server = DefaultServerURL
	}
	var cfg Config
	fs.StringVar(&cfg.ServerURL, "server", server, "regional agent API base URL (env LPMOS_AGENT_SERVER, or the seed's REGIONAL_CLIENT_URL)")
	fs.StringVar(&cfg.TaskID, "task", getenv("LPMOS_AGENT_TASK"), "task id (env LPMOS_AGENT_TASK; optional, the approval names it)")
	fs.StringVar(&cfg.Token, "token", getenv("LPMOS_AGENT_TOKEN"), "boot token of the task (lpmos_token in its iPXE script), exchanged once for a session (env LPMOS_AGENT_TOKEN)")
	fs.StringVar(&cfg.CAPin, "ca-pin", getenv("LPMOS_AGENT_CA_PIN"), "sha256:<hex> of the cluster CA certificate (lpmos_ca in the iPXE script): talk HTTPS to the server and trust only that CA (env LPMOS_AGENT_CA_PIN)")
	fs.StringVar(&cfg.MAC, "mac", "", "MAC address to report as (default: first NIC with a link)")
	fs.StringVar(&cfg.Disk, "disk", "", "target disk: a block device or an existing regular file; without it nothing is written (demo)")
	fs.BoolVar(&cfg.PowerOff, "poweroff", false, "power off instead of rebooting at the end (PID-1 mode only)")
	fs.BoolVar(&cfg.HardwareJSON, "hardware-json", false, "print the hardware report as JSON and exit")
	fs.StringVar(&cfg.SysRoot, "sysroot", "/", "root of the /proc and /sys trees to read hardware from")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return cfg, cfg.normalize()
}

// normalize validates the URL and canonicalizes the MAC.
func (c *Config) normalize() error {
	u, err := url.Parse(c.ServerURL)
	if err != nil {
		return fmt.Errorf("server URL %q: %w", c.ServerURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("server URL %q: want http(s)://host[:port]", c.ServerURL)
	}
	c.ServerURL = strings.TrimRight(c.ServerURL, "/")
	if c.CAPin != "" {
		h, ok := strings.CutPrefix(c.CAPin, wire.CAPinPrefix)
		if !ok || len(h) != 64 || strings.Trim(strings.ToLower(h), "0123456789abcdef") != "" {
			return fmt.Errorf("%s=%s: want %s<64 hex digits> (the sha256 of the cluster CA certificate's DER)", wire.ParamCA, c.CAPin, wire.CAPinPrefix)
		}
		if u.Scheme != "https" {
			return fmt.Errorf("server URL %q is not https but a CA is pinned (%s=): the pinned agent only talks HTTPS", c.ServerURL, wire.ParamCA)
		}
	}
	if c.MAC != "" {
		hw, err := net.ParseMAC(c.MAC)
		if err != nil {
			return fmt.Errorf("mac %q: %w", c.MAC, err)
		}
		c.MAC = hw.String()
	}
	if c.SysRoot == "" {
		return errors.New("sysroot must not be empty")
	}
	return nil
}
