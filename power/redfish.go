package power

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"
)

// redfishDriver talks Redfish with github.com/stmcginnis/gofish, logging in
// with a Redfish session (POST SessionService/Sessions) per call and
// logging out after it.
type redfishDriver struct {
	bmc      BMC
	endpoint string
}

func newRedfish(b BMC) (*redfishDriver, error) {
	host, port, err := splitHostPort(b.Address, 443)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b, err)
	}
	u := url.URL{Scheme: "https", Host: host}
	if port != 443 {
		u.Host = netJoin(host, port)
	}
	// Tests (and BMC emulators) may say http:// explicitly.
	if strings.HasPrefix(b.Address, "http://") || strings.HasPrefix(b.Address, "https://") {
		pu, err := url.Parse(b.Address)
		if err != nil || pu.Host == "" {
			return nil, fmt.Errorf("%s: address is not a URL", b)
		}
		u = url.URL{Scheme: pu.Scheme, Host: pu.Host}
	}
	return &redfishDriver{bmc: b, endpoint: u.String()}, nil
}

func netJoin(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// system logs in, finds the ComputerSystem and runs fn with it.
func (d *redfishDriver) system(ctx context.Context, what string, fn func(*gofish.APIClient, *schemas.ComputerSystem) error) error {
	ctx, cancel := context.WithTimeout(ctx, d.bmc.timeout())
	defer cancel()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: d.bmc.InsecureTLS} //nolint:gosec // the operator's choice per BMC
	hc := &http.Client{Transport: tr, Timeout: d.bmc.timeout()}
	defer tr.CloseIdleConnections()
	// Log in with a Redfish session where the service offers one (the
	// norm), else with HTTP basic auth on each request.
	basic, err := d.basicAuthOnly(ctx, hc)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", d.bmc, what, err)
	}
	c, err := gofish.ConnectContext(ctx, gofish.ClientConfig{
		BasicAuth:         basic,
		Endpoint:          d.endpoint,
		Username:          d.bmc.Username,
		Password:          d.bmc.Password,
		Insecure:          d.bmc.InsecureTLS,
		HTTPClient:        hc,
		NoModifyTransport: true,
	})
	if err != nil {
		return fmt.Errorf("%s: %s: login: %w", d.bmc, what, explainRedfish(ctx, err))
	}
	defer c.Logout()
	systems, err := c.Service.Systems()
	if err != nil {
		return fmt.Errorf("%s: %s: list systems: %w", d.bmc, what, explainRedfish(ctx, err))
	}
	sys, err := pickSystem(systems, d.bmc.SystemID)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", d.bmc, what, err)
	}
	if err := fn(c, sys); err != nil {
		return fmt.Errorf("%s: %s: %w", d.bmc, what, explainRedfish(ctx, err))
	}
	return nil
}

// basicAuthOnly reads the (unauthenticated) service root and reports
// whether it lacks a Sessions link.
func (d *redfishDriver) basicAuthOnly(ctx context.Context, hc *http.Client) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.endpoint+"/redfish/v1/", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("service root: no answer (unreachable?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("service root: the BMC answered %s (not a Redfish service?)", resp.Status)
	}
	var root struct {
		Links struct {
			Sessions struct {
				ID string `json:"@odata.id"`
			}
		}
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&root); err != nil {
		return false, fmt.Errorf("service root: not Redfish JSON: %w", err)
	}
	return root.Links.Sessions.ID == "", nil
}

func pickSystem(systems []*schemas.ComputerSystem, id string) (*schemas.ComputerSystem, error) {
	var ids []string
	for _, s := range systems {
		sid := s.ID
		if sid == "" {
			sid = path.Base(strings.TrimSuffix(s.ODataID, "/"))
		}
		if id == "" && len(systems) == 1 || sid == id {
			return s, nil
		}
		ids = append(ids, sid)
	}
	if len(systems) == 0 {
		return nil, errors.New("the service lists no systems")
	}
	slices.Sort(ids)
	if id == "" {
		return nil, fmt.Errorf("the service has %d systems (%s): name one as the system id", len(ids), strings.Join(ids, ", "))
	}
	return nil, fmt.Errorf("no system %q; the service has: %s", id, strings.Join(ids, ", "))
}

// explainRedfish keeps the BMC's own status and message, without echoing
// request bodies (which may hold the password).
func explainRedfish(ctx context.Context, err error) error {
	var re *schemas.Error
	if errors.As(err, &re) {
		msg := re.Message
		for _, ei := range re.ExtendedInfos {
			if ei.Message != "" {
				msg = strings.TrimSpace(msg + " " + ei.Message)
			}
		}
		if msg == "" {
			msg = http.StatusText(re.HTTPReturnedStatusCode)
		}
		switch re.HTTPReturnedStatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("the BMC answered %d (wrong username or password?): %s", re.HTTPReturnedStatusCode, msg)
		}
		return fmt.Errorf("the BMC answered %d: %s", re.HTTPReturnedStatusCode, msg)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("no answer in time (unreachable?): %w", err)
	}
	// gofish reports collection members' failures as text.
	for _, code := range []string{"401", "403"} {
		if strings.Contains(err.Error(), code+": ") {
			return fmt.Errorf("the BMC answered %s (wrong username or password?): %w", code, err)
		}
	}
	return err
}

func (d *redfishDriver) Status(ctx context.Context) (State, error) {
	st := Unknown
	err := d.system(ctx, "get power state", func(_ *gofish.APIClient, s *schemas.ComputerSystem) error {
		switch s.PowerState {
		case schemas.OnPowerState:
			st = On
		case schemas.OffPowerState:
			st = Off
		}
		return nil
	})
	return st, err
}

// reset posts ComputerSystem.Reset to the target the system advertises.
// (gofish v0.21.0's ComputerSystem.Reset posts to the RemoveResourceBlock
// target instead, so we post ourselves.) The first of want the system
// allows is used.
func (d *redfishDriver) reset(ctx context.Context, what string, want ...schemas.ResetType) error {
	return d.system(ctx, what, func(c *gofish.APIClient, s *schemas.ComputerSystem) error {
		var raw struct {
			Actions struct {
				Reset struct {
					Target string `json:"target"`
				} `json:"#ComputerSystem.Reset"`
			}
		}
		if err := json.Unmarshal(s.RawData, &raw); err != nil {
			return fmt.Errorf("reading the system's actions: %w", err)
		}
		target := raw.Actions.Reset.Target
		if target == "" {
			return errors.New("the system offers no ComputerSystem.Reset action")
		}
		allowed, err := s.GetSupportedResetTypes()
		if err != nil {
			return fmt.Errorf("reading the allowed reset types: %w", err)
		}
		rt := want[0]
		if len(allowed) > 0 {
			i := slices.IndexFunc(want, func(w schemas.ResetType) bool { return slices.Contains(allowed, w) })
			if i < 0 {
				return fmt.Errorf("the system allows reset types %v, none of %v", allowed, want)
			}
			rt = want[i]
		}
		resp, err := c.Post(target, struct{ ResetType schemas.ResetType }{rt})
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		return err
	})
}

func (d *redfishDriver) On(ctx context.Context) error {
	return d.reset(ctx, "power on", schemas.OnResetType, schemas.ForceOnResetType)
}

func (d *redfishDriver) Off(ctx context.Context) error {
	return d.reset(ctx, "power off", schemas.ForceOffResetType)
}

// Cycle power-cycles a machine that is on (PowerCycle, else ForceRestart)
// and powers on one that is off.
func (d *redfishDriver) Cycle(ctx context.Context) error {
	st, err := d.Status(ctx)
	if err != nil {
		return err
	}
	if st == Off {
		return d.On(ctx)
	}
	return d.reset(ctx, "power cycle", schemas.PowerCycleResetType, schemas.ForceRestartResetType)
}

func (d *redfishDriver) SetBootDevice(ctx context.Context, dev BootDevice, once bool) error {
	target := schemas.PxeBootSource
	switch dev {
	case PXE:
	case Disk:
		target = schemas.HddBootSource
	default:
		return fmt.Errorf("%s: boot device %q: use pxe or disk", d.bmc, dev)
	}
	enabled := schemas.OnceBootSourceOverrideEnabled
	if !once {
		enabled = schemas.ContinuousBootSourceOverrideEnabled
	}
	return d.system(ctx, "set boot device "+string(dev), func(_ *gofish.APIClient, s *schemas.ComputerSystem) error {
		if allowed := s.Boot.AllowableBootSourceOverrideTargetValues; len(allowed) > 0 && !slices.Contains(allowed, target) {
			return fmt.Errorf("boot device override refused: the system allows %v, not %s", allowed, target)
		}
		// Only the two override fields: some BMCs refuse a PATCH that
		// carries read-only or unchanged Boot properties.
		err := s.Patch(s.ODataID, map[string]any{"Boot": map[string]any{
			"BootSourceOverrideTarget":  target,
			"BootSourceOverrideEnabled": enabled,
		}})
		if err != nil {
			return fmt.Errorf("boot device override refused: %w", explainRedfish(ctx, err))
		}
		return nil
	})
}
