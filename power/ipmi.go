package power

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// ipmiDriver talks IPMI v2.0 over LAN (RMCP+, "lanplus") with
// github.com/bougou/go-ipmi. Every call opens a session and closes it.
type ipmiDriver struct {
	bmc  BMC
	host string
	port int
}

func newIPMI(b BMC) (*ipmiDriver, error) {
	host, port, err := splitHostPort(b.Address, 623)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b, err)
	}
	return &ipmiDriver{bmc: b, host: host, port: port}, nil
}

// session runs fn in a fresh RMCP+ session bounded by the BMC timeout.
func (d *ipmiDriver) session(ctx context.Context, what string, fn func(context.Context, *client.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, d.bmc.timeout())
	defer cancel()
	c, err := client.NewClient(d.host, d.port, d.bmc.Username, d.bmc.Password)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", d.bmc, what, err)
	}
	// A short per-packet timeout with retries, all within the action's bound.
	per := d.bmc.timeout() / 4
	c.WithInterface(client.InterfaceLanplus).WithTimeout(per).WithRetry(2).
		// Cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) is
		// what every BMC of the last 15 years offers; asking for it skips
		// the cipher suite discovery some BMCs answer slowly.
		WithCipherSuiteID(types.CipherSuiteID3).
		WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	// go-ipmi honours ctx on every UDP exchange, so this is bounded too.
	if err := c.Connect(ctx); err != nil {
		return fmt.Errorf("%s: %s: %w", d.bmc, what, explainIPMI(ctx, err, true))
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), per)
		defer ccancel()
		_ = c.Close(cctx)
	}()
	if err := fn(ctx, c); err != nil {
		return fmt.Errorf("%s: %s: %w", d.bmc, what, explainIPMI(ctx, err, false))
	}
	return nil
}

const refusedOverride = "boot device override refused"

// explainIPMI turns library errors into what the BMC answered.
func explainIPMI(ctx context.Context, err error, login bool) error {
	var re *types.ResponseError
	if errors.As(err, &re) {
		e := fmt.Errorf("the BMC answered completion code %#02x (%s)", uint8(re.CompletionCode()), re.CompletionCode().String())
		if strings.HasPrefix(err.Error(), refusedOverride) {
			return fmt.Errorf("%s: %w", refusedOverride, e)
		}
		return e
	}
	msg := err.Error()
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "timeout") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "UDP exchange error") || strings.Contains(msg, "deadline"):
		return fmt.Errorf("no answer (unreachable or not an IPMI BMC): %w", err)
	case login && (strings.Contains(msg, "RAKP") || strings.Contains(strings.ToLower(msg), "unauthorized") || strings.Contains(strings.ToLower(msg), "invalid")):
		return fmt.Errorf("login refused (wrong username or password?): %w", err)
	}
	return err
}

func (d *ipmiDriver) Status(ctx context.Context) (State, error) {
	st := Unknown
	err := d.session(ctx, "get chassis status", func(ctx context.Context, c *client.Client) error {
		res, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		st = Off
		if res.PowerIsOn {
			st = On
		}
		return nil
	})
	return st, err
}

func (d *ipmiDriver) control(ctx context.Context, what string, cc chassis.ChassisControl) error {
	return d.session(ctx, what, func(ctx context.Context, c *client.Client) error {
		_, err := c.ChassisControl(ctx, cc)
		return err
	})
}

func (d *ipmiDriver) On(ctx context.Context) error {
	return d.control(ctx, "chassis power on", chassis.ChassisControlPowerUp)
}

func (d *ipmiDriver) Off(ctx context.Context) error {
	return d.control(ctx, "chassis power off", chassis.ChassisControlPowerDown)
}

// Cycle power-cycles a machine that is on and powers on one that is off
// (IPMI's power cycle has no effect on a machine that is off).
func (d *ipmiDriver) Cycle(ctx context.Context) error {
	return d.session(ctx, "chassis power cycle", func(ctx context.Context, c *client.Client) error {
		res, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		cc := chassis.ChassisControlPowerCycle
		if !res.PowerIsOn {
			cc = chassis.ChassisControlPowerUp
		}
		_, err = c.ChassisControl(ctx, cc)
		return err
	})
}

func (d *ipmiDriver) SetBootDevice(ctx context.Context, dev BootDevice, once bool) error {
	sel := types.BootDeviceSelectorForcePXE
	switch dev {
	case PXE:
	case Disk:
		sel = types.BootDeviceSelectorForceHardDrive
	default:
		return fmt.Errorf("%s: boot device %q: use pxe or disk", d.bmc, dev)
	}
	return d.session(ctx, "set boot device "+string(dev), func(ctx context.Context, c *client.Client) error {
		err := c.SetBootDevice(ctx, sel, types.BIOSBootTypeLegacy, !once)
		if err != nil {
			return fmt.Errorf("%s: %w", refusedOverride, err)
		}
		return nil
	})
}
