// Package power controls a machine's power and next boot device through its
// BMC: IPMI-over-LAN (RMCP+, github.com/bougou/go-ipmi) or Redfish
// (github.com/stmcginnis/gofish). The facade is Driver and New; each driver
// opens a connection per call, so a Driver holds no sockets between calls.
//
// Errors name the BMC by protocol and address and say what it answered; they
// never contain the username's password.
package power

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// State is a machine's power state as the BMC reports it.
type State string

const (
	On      State = "on"
	Off     State = "off"
	Unknown State = "unknown" // e.g. Redfish PoweringOn/PoweringOff or no PowerState
)

// BootDevice is the device a machine boots from next.
type BootDevice string

const (
	PXE  BootDevice = "pxe"
	Disk BootDevice = "disk"
)

// Driver performs power actions on one machine's BMC.
type Driver interface {
	// Status returns the machine's current power state.
	Status(ctx context.Context) (State, error)
	// On powers the machine on (a no-op when it is on, for BMCs that allow it).
	On(ctx context.Context) error
	// Off powers the machine off hard (no OS shutdown).
	Off(ctx context.Context) error
	// Cycle power-cycles the machine: off then on, or a hard reset.
	Cycle(ctx context.Context) error
	// SetBootDevice sets the next boot device; once=false makes it persistent.
	SetBootDevice(ctx context.Context, dev BootDevice, once bool) error
}

// Protocols a BMC speaks.
const (
	IPMI    = "ipmi"
	Redfish = "redfish"
)

// BMC is how to reach a machine's BMC.
type BMC struct {
	Protocol string // "ipmi" or "redfish"
	// Address is host or host:port (IPMI default port 623, Redfish 443).
	Address  string
	Username string
	Password string
	// SystemID is the Redfish ComputerSystem id (the last path element under
	// /redfish/v1/Systems/); empty means the service's only system.
	SystemID string
	// InsecureTLS skips Redfish TLS certificate verification (BMCs with
	// self-signed certificates).
	InsecureTLS bool
	// Timeout bounds one power action (connect, login, command). Zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds one power action when BMC.Timeout is zero.
const DefaultTimeout = 20 * time.Second

// String names the BMC without credentials, for errors and logs.
func (b BMC) String() string {
	s := b.Protocol + " BMC " + b.Address
	if b.SystemID != "" {
		s += " system " + b.SystemID
	}
	return s
}

// Validate reports what is missing or wrong in b.
func (b BMC) Validate() error {
	switch b.Protocol {
	case IPMI, Redfish:
	default:
		return fmt.Errorf("BMC protocol %q: use ipmi or redfish", b.Protocol)
	}
	if b.Address == "" {
		return errors.New("BMC address is empty")
	}
	if _, _, err := splitHostPort(b.Address, 1); err != nil {
		return fmt.Errorf("BMC address %q: %w", b.Address, err)
	}
	if b.Username == "" {
		return fmt.Errorf("%s: username is empty", b)
	}
	if b.Protocol == IPMI && b.SystemID != "" {
		return fmt.Errorf("%s: a system id is only for redfish", b)
	}
	if b.Protocol == IPMI && len(b.Username) > 16 {
		return fmt.Errorf("%s: IPMI usernames are at most 16 characters", b)
	}
	if b.Protocol == IPMI && len(b.Password) > 20 {
		return errors.New("IPMI passwords are at most 20 characters")
	}
	return nil
}

func (b BMC) timeout() time.Duration {
	if b.Timeout > 0 {
		return b.Timeout
	}
	return DefaultTimeout
}

// New returns the driver for b's protocol.
func New(b BMC) (Driver, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	switch b.Protocol {
	case IPMI:
		return newIPMI(b)
	default:
		return newRedfish(b)
	}
}

// ParseBootDevice accepts "pxe" or "disk" (any case).
func ParseBootDevice(s string) (BootDevice, error) {
	switch d := BootDevice(strings.ToLower(s)); d {
	case PXE, Disk:
		return d, nil
	}
	return "", fmt.Errorf("boot device %q: use pxe or disk", s)
}

// splitHostPort splits host[:port], with def when there is no port.
func splitHostPort(addr string, def int) (string, int, error) {
	host, port := addr, ""
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host, port = h, p
	} else if strings.Count(addr, ":") == 1 {
		return "", 0, errors.New("port is not a number")
	}
	if host == "" {
		return "", 0, errors.New("host is empty")
	}
	if port == "" {
		return host, def, nil
	}
	var n int
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != port {
		return "", 0, fmt.Errorf("port %q: use 1-65535", port)
	}
	return host, n, nil
}
