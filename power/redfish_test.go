package power

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/power/redfishsim"
)

func TestRedfishActions(t *testing.T) {
	const id = "System.Embedded.1"
	tests := []struct {
		name   string
		setup  func(*redfishsim.Server)
		bmc    func(BMC) BMC
		do     func(context.Context, Driver) (State, error)
		want   []string // actions the BMC performed
		state  State    // for status
		errHas []string // "" = must succeed
	}{
		{name: "status off", do: status, state: Off},
		{name: "status on", setup: func(f *redfishsim.Server) { f.PowerOf[id] = "On" }, do: status, state: On},
		{name: "status powering on is unknown", setup: func(f *redfishsim.Server) { f.PowerOf[id] = "PoweringOn" }, do: status, state: Unknown},
		{name: "on", do: act(Driver.On), want: []string{id + " reset On"}},
		{name: "on with ForceOn only", setup: func(f *redfishsim.Server) { f.ResetTypes = []string{"ForceOn", "ForceOff"} }, do: act(Driver.On), want: []string{id + " reset ForceOn"}},
		{name: "off", setup: func(f *redfishsim.Server) { f.PowerOf[id] = "On" }, do: act(Driver.Off), want: []string{id + " reset ForceOff"}},
		{name: "cycle when on", setup: func(f *redfishsim.Server) { f.PowerOf[id] = "On" }, do: act(Driver.Cycle), want: []string{id + " reset PowerCycle"}},
		{name: "cycle without PowerCycle uses ForceRestart", setup: func(f *redfishsim.Server) {
			f.PowerOf[id] = "On"
			f.ResetTypes = []string{"On", "ForceOff", "ForceRestart"}
		}, do: act(Driver.Cycle), want: []string{id + " reset ForceRestart"}},
		{name: "cycle when off powers on", do: act(Driver.Cycle), want: []string{id + " reset On"}},
		{name: "pxe once", do: boot(PXE, true), want: []string{id + " boot Pxe Once"}},
		{name: "disk persistent", do: boot(Disk, false), want: []string{id + " boot Hdd Continuous"}},
		{name: "basic auth BMC without sessions", setup: func(f *redfishsim.Server) { f.BasicOnly = true }, do: act(Driver.On), want: []string{id + " reset On"}},
		{name: "basic auth wrong password", setup: func(f *redfishsim.Server) { f.BasicOnly = true }, bmc: func(b BMC) BMC { b.Password = "wrong-pw-123"; return b }, do: status,
			errHas: []string{"401", "wrong username or password"}},
		{name: "system id chosen of two", setup: func(f *redfishsim.Server) { f.Systems = []string{"1", id} }, bmc: withSystem(id), do: act(Driver.On), want: []string{id + " reset On"}},
		// Bad input and refusals.
		{name: "wrong password", bmc: func(b BMC) BMC { b.Password = "wrong-pw-123"; return b }, do: status,
			errHas: []string{"redfish BMC", "login", "401", "wrong username or password", "no valid session"}},
		{name: "system id missing", bmc: withSystem("Self"), do: status,
			errHas: []string{"redfish BMC", "system Self", `no system "Self"`, id}},
		{name: "two systems and no id", setup: func(f *redfishsim.Server) { f.Systems = []string{"1", "2"} }, do: status,
			errHas: []string{"2 systems (1, 2)", "name one as the system id"}},
		{name: "no systems", setup: func(f *redfishsim.Server) { f.Systems = nil }, do: status, errHas: []string{"lists no systems"}},
		{name: "boot override refused by the BMC", setup: func(f *redfishsim.Server) { f.RefuseBoot = true }, do: boot(PXE, true), errHas: []string{"boot device override refused", "400", "Pxe", "not in the list of acceptable values"}},
		{name: "boot override not in allowable values", setup: func(f *redfishsim.Server) { f.BootAllow = []string{"None", "Hdd"} }, do: boot(PXE, true),
			errHas: []string{"boot device override refused", "allows [None Hdd], not Pxe"}},
		{name: "reset type not allowed", setup: func(f *redfishsim.Server) { f.ResetTypes = []string{"GracefulShutdown"} }, do: act(Driver.On),
			errHas: []string{"power on", "allows reset types [GracefulShutdown]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := redfishsim.New()
			if tc.setup != nil {
				tc.setup(f)
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			b := BMC{Protocol: Redfish, Address: srv.URL, Username: f.User, Password: f.Pass, Timeout: 5 * time.Second}
			if tc.bmc != nil {
				b = tc.bmc(b)
			}
			d, err := New(b)
			if err != nil {
				t.Fatal(err)
			}
			st, err := tc.do(context.Background(), d)
			if tc.errHas != nil {
				if err == nil {
					t.Fatalf("want an error with %q, got none (actions %v)", tc.errHas, f.Took())
				}
				for _, s := range tc.errHas {
					if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(s)) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				if strings.Contains(err.Error(), b.Password) || strings.Contains(err.Error(), f.Pass) {
					t.Errorf("error %q contains the password", err)
				}
				if got := f.Took(); len(got) > 0 {
					t.Errorf("a failed call still made the BMC do %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.state != "" && st != tc.state {
				t.Errorf("state %q, want %q", st, tc.state)
			}
			if got := f.Took(); !slices.Equal(got, tc.want) {
				t.Errorf("BMC actions %v, want %v", got, tc.want)
			}
			if n := f.Sessions(); n != 0 {
				t.Errorf("%d sessions left open (no logout)", n)
			}
		})
	}
}

func TestRedfishUnreachableIsBounded(t *testing.T) {
	// A server that accepts and never answers, like a BMC that hangs.
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)
	d, err := New(BMC{Protocol: Redfish, Address: srv.URL, Username: "admin", Password: "pw-xyz", Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d.Status(context.Background())
	if err == nil {
		t.Fatal("want an error from a BMC that never answers")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v with a 500ms timeout", el)
	}
	if !strings.Contains(err.Error(), "redfish BMC "+srv.URL) || strings.Contains(err.Error(), "pw-xyz") {
		t.Errorf("error %q: want the BMC named, no password", err)
	}
}

func status(ctx context.Context, d Driver) (State, error) { return d.Status(ctx) }

func act(f func(Driver, context.Context) error) func(context.Context, Driver) (State, error) {
	return func(ctx context.Context, d Driver) (State, error) { return "", f(d, ctx) }
}

func boot(dev BootDevice, once bool) func(context.Context, Driver) (State, error) {
	return func(ctx context.Context, d Driver) (State, error) { return "", d.SetBootDevice(ctx, dev, once) }
}

func withSystem(id string) func(BMC) BMC {
	return func(b BMC) BMC { b.SystemID = id; return b }
}

func TestRedfishTLSPolicy(t *testing.T) {
	f := redfishsim.New()
	srv := httptest.NewTLSServer(f) // a self-signed certificate, like most BMCs
	defer srv.Close()
	tests := []struct {
		name     string
		insecure bool
		errHas   string
	}{
		{name: "verified by default", insecure: false, errHas: "certificate"},
		{name: "InsecureTLS accepts a self-signed BMC", insecure: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(BMC{Protocol: Redfish, Address: srv.URL, Username: f.User, Password: f.Pass, InsecureTLS: tc.insecure, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			st, err := d.Status(context.Background())
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one with %q", err, tc.errHas)
				}
				return
			}
			if err != nil || st != Off {
				t.Fatalf("status %q, %v; want off", st, err)
			}
		})
	}
	// The address without a scheme means https on the given port.
	d, err := New(BMC{Protocol: Redfish, Address: strings.TrimPrefix(srv.URL, "https://"), Username: f.User, Password: f.Pass, InsecureTLS: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := d.Status(context.Background()); err != nil || st != Off {
		t.Fatalf("host:port address: status %q, %v", st, err)
	}
}
