package power

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRedfish is a Redfish service shaped like a real BMC's (DMTF schema
// names and @odata links, as iDRAC/iLO/OpenBMC serve them): a ServiceRoot,
// a SessionService, a Systems collection, ComputerSystems with PowerState,
// Boot override fields and the #ComputerSystem.Reset action with its
// allowable values. It records every action it performed.
type fakeRedfish struct {
	user, pass string
	systems    []string // system ids
	resetTypes []string // ResetType@Redfish.AllowableValues
	bootAllow  []string // BootSourceOverrideTarget@Redfish.AllowableValues
	basicOnly  bool     // no SessionService (basic auth only)
	refuseBoot bool     // lists Pxe as allowed yet refuses it (seen on real BMCs)

	mu      sync.Mutex
	power   map[string]string
	boot    map[string][2]string // target, enabled
	actions []string
	tokens  map[string]bool
}

func newFakeRedfish() *fakeRedfish {
	return &fakeRedfish{
		user: "admin", pass: "s3cret-pw", systems: []string{"System.Embedded.1"},
		resetTypes: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle", "Nmi"},
		bootAllow:  []string{"None", "Pxe", "Hdd", "Cd", "BiosSetup"},
		power:      map[string]string{}, boot: map[string][2]string{}, tokens: map[string]bool{},
	}
}

func rfError(w http.ResponseWriter, code int, id, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": "Base.1.8.GeneralError", "message": "A general error has occurred. See ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []map[string]any{{"MessageId": id, "Message": msg, "Severity": "Critical"}},
	}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeRedfish) authed(r *http.Request) bool {
	if u, p, ok := r.BasicAuth(); ok {
		return u == f.user && p == f.pass
	}
	return f.tokens[r.Header.Get("X-Auth-Token")]
}

func (f *fakeRedfish) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := strings.TrimSuffix(r.URL.Path, "/")
	const sys = "/redfish/v1/Systems/"
	switch {
	case r.Method == http.MethodGet && p == "/redfish/v1":
		root := map[string]any{
			"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
			"Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.15.0",
			"Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"},
		}
		if !f.basicOnly {
			root["SessionService"] = map[string]string{"@odata.id": "/redfish/v1/SessionService"}
			root["Links"] = map[string]any{"Sessions": map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions"}}
		}
		writeJSON(w, root)
		return
	case r.Method == http.MethodPost && p == "/redfish/v1/SessionService/Sessions" && !f.basicOnly:
		var body struct{ UserName, Password string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body.UserName != f.user || body.Password != f.pass {
			rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
			return
		}
		tok := fmt.Sprintf("tok-%d", len(f.tokens)+1)
		f.tokens[tok] = true
		w.Header().Set("X-Auth-Token", tok)
		w.Header().Set("Location", "/redfish/v1/SessionService/Sessions/"+tok)
		w.WriteHeader(http.StatusCreated)
		writeJSON(w, map[string]any{"@odata.id": "/redfish/v1/SessionService/Sessions/" + tok, "Id": tok, "UserName": body.UserName})
		return
	}
	if !f.authed(r) {
		rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	switch {
	case r.Method == http.MethodDelete && strings.HasPrefix(p, "/redfish/v1/SessionService/Sessions/"):
		delete(f.tokens, p[strings.LastIndex(p, "/")+1:])
		f.actions = append(f.actions, "logout")
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && p == "/redfish/v1/Systems":
		var members []map[string]string
		for _, id := range f.systems {
			members = append(members, map[string]string{"@odata.id": sys + id})
		}
		writeJSON(w, map[string]any{
			"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
			"Name": "Computer System Collection", "Members": members, "Members@odata.count": len(members),
		})
	case strings.HasPrefix(p, sys):
		rest := strings.TrimPrefix(p, sys)
		id, action, _ := strings.Cut(rest, "/")
		if !slices.Contains(f.systems, id) {
			rfError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found.")
			return
		}
		f.serveSystem(w, r, id, action)
	default:
		rfError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found.")
	}
}

func (f *fakeRedfish) serveSystem(w http.ResponseWriter, r *http.Request, id, action string) {
	if f.power[id] == "" {
		f.power[id] = "Off"
	}
	switch {
	case r.Method == http.MethodGet && action == "":
		b := f.boot[id]
		if b[0] == "" {
			b = [2]string{"None", "Disabled"}
		}
		writeJSON(w, map[string]any{
			"@odata.id": "/redfish/v1/Systems/" + id, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
			"@odata.etag": `W/"1"`,
			"Id":          id, "Name": "System", "SystemType": "Physical", "PowerState": f.power[id],
			"Boot": map[string]any{
				"BootSourceOverrideTarget": b[0], "BootSourceOverrideEnabled": b[1], "BootSourceOverrideMode": "UEFI",
				"BootSourceOverrideTarget@Redfish.AllowableValues": f.bootAllow,
			},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target":                            "/redfish/v1/Systems/" + id + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": f.resetTypes,
			}},
		})
	case r.Method == http.MethodPost && action == "Actions/ComputerSystem.Reset":
		var body struct{ ResetType string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || !slices.Contains(f.resetTypes, body.ResetType) {
			rfError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueNotInList",
				fmt.Sprintf("The value '%s' for the parameter ResetType is not in the list of acceptable values.", body.ResetType))
			return
		}
		switch body.ResetType {
		case "On", "ForceOn", "PowerCycle", "ForceRestart":
			f.power[id] = "On"
		case "ForceOff", "GracefulShutdown":
			f.power[id] = "Off"
		}
		f.actions = append(f.actions, id+" reset "+body.ResetType)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPatch && action == "":
		var body struct {
			Boot map[string]string
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Boot == nil {
			rfError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON.")
			return
		}
		if len(body.Boot) != 2 {
			rfError(w, http.StatusBadRequest, "Base.1.8.PropertyNotWritable", fmt.Sprintf("PATCH carried %d Boot properties", len(body.Boot)))
			return
		}
		t, e := body.Boot["BootSourceOverrideTarget"], body.Boot["BootSourceOverrideEnabled"]
		if !slices.Contains(f.bootAllow, t) || f.refuseBoot {
			rfError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
				fmt.Sprintf("The value '%s' for the property BootSourceOverrideTarget is not in the list of acceptable values.", t))
			return
		}
		f.boot[id] = [2]string{t, e}
		f.actions = append(f.actions, id+" boot "+t+" "+e)
		w.WriteHeader(http.StatusNoContent)
	default:
		rfError(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "The operation is not allowed.")
	}
}

func (f *fakeRedfish) took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range f.actions {
		if a != "logout" {
			out = append(out, a)
		}
	}
	return out
}

func TestRedfishActions(t *testing.T) {
	const id = "System.Embedded.1"
	tests := []struct {
		name   string
		setup  func(*fakeRedfish)
		bmc    func(BMC) BMC
		do     func(context.Context, Driver) (State, error)
		want   []string // actions the BMC performed
		state  State    // for status
		errHas []string // "" = must succeed
	}{
		{name: "status off", do: status, state: Off},
		{name: "status on", setup: func(f *fakeRedfish) { f.power[id] = "On" }, do: status, state: On},
		{name: "status powering on is unknown", setup: func(f *fakeRedfish) { f.power[id] = "PoweringOn" }, do: status, state: Unknown},
		{name: "on", do: act(Driver.On), want: []string{id + " reset On"}},
		{name: "on with ForceOn only", setup: func(f *fakeRedfish) { f.resetTypes = []string{"ForceOn", "ForceOff"} }, do: act(Driver.On), want: []string{id + " reset ForceOn"}},
		{name: "off", setup: func(f *fakeRedfish) { f.power[id] = "On" }, do: act(Driver.Off), want: []string{id + " reset ForceOff"}},
		{name: "cycle when on", setup: func(f *fakeRedfish) { f.power[id] = "On" }, do: act(Driver.Cycle), want: []string{id + " reset PowerCycle"}},
		{name: "cycle without PowerCycle uses ForceRestart", setup: func(f *fakeRedfish) {
			f.power[id] = "On"
			f.resetTypes = []string{"On", "ForceOff", "ForceRestart"}
		}, do: act(Driver.Cycle), want: []string{id + " reset ForceRestart"}},
		{name: "cycle when off powers on", do: act(Driver.Cycle), want: []string{id + " reset On"}},
		{name: "pxe once", do: boot(PXE, true), want: []string{id + " boot Pxe Once"}},
		{name: "disk persistent", do: boot(Disk, false), want: []string{id + " boot Hdd Continuous"}},
		{name: "basic auth BMC without sessions", setup: func(f *fakeRedfish) { f.basicOnly = true }, do: act(Driver.On), want: []string{id + " reset On"}},
		{name: "basic auth wrong password", setup: func(f *fakeRedfish) { f.basicOnly = true }, bmc: func(b BMC) BMC { b.Password = "wrong-pw-123"; return b }, do: status,
			errHas: []string{"401", "wrong username or password"}},
		{name: "system id chosen of two", setup: func(f *fakeRedfish) { f.systems = []string{"1", id} }, bmc: withSystem(id), do: act(Driver.On), want: []string{id + " reset On"}},
		// Bad input and refusals.
		{name: "wrong password", bmc: func(b BMC) BMC { b.Password = "wrong-pw-123"; return b }, do: status,
			errHas: []string{"redfish BMC", "login", "401", "wrong username or password", "no valid session"}},
		{name: "system id missing", bmc: withSystem("Self"), do: status,
			errHas: []string{"redfish BMC", "system Self", `no system "Self"`, id}},
		{name: "two systems and no id", setup: func(f *fakeRedfish) { f.systems = []string{"1", "2"} }, do: status,
			errHas: []string{"2 systems (1, 2)", "name one as the system id"}},
		{name: "no systems", setup: func(f *fakeRedfish) { f.systems = nil }, do: status, errHas: []string{"lists no systems"}},
		{name: "boot override refused by the BMC", setup: func(f *fakeRedfish) { f.refuseBoot = true }, do: boot(PXE, true), errHas: []string{"boot device override refused", "400", "Pxe", "not in the list of acceptable values"}},
		{name: "boot override not in allowable values", setup: func(f *fakeRedfish) { f.bootAllow = []string{"None", "Hdd"} }, do: boot(PXE, true),
			errHas: []string{"boot device override refused", "allows [None Hdd], not Pxe"}},
		{name: "reset type not allowed", setup: func(f *fakeRedfish) { f.resetTypes = []string{"GracefulShutdown"} }, do: act(Driver.On),
			errHas: []string{"power on", "allows reset types [GracefulShutdown]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRedfish()
			if tc.setup != nil {
				tc.setup(f)
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			b := BMC{Protocol: Redfish, Address: srv.URL, Username: f.user, Password: f.pass, Timeout: 5 * time.Second}
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
					t.Fatalf("want an error with %q, got none (actions %v)", tc.errHas, f.took())
				}
				for _, s := range tc.errHas {
					if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(s)) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				if strings.Contains(err.Error(), b.Password) || strings.Contains(err.Error(), f.pass) {
					t.Errorf("error %q contains the password", err)
				}
				if got := f.took(); len(got) > 0 {
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
			if got := f.took(); !slices.Equal(got, tc.want) {
				t.Errorf("BMC actions %v, want %v", got, tc.want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.tokens) != 0 {
				t.Errorf("%d sessions left open (no logout)", len(f.tokens))
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
	f := newFakeRedfish()
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
			d, err := New(BMC{Protocol: Redfish, Address: srv.URL, Username: f.user, Password: f.pass, InsecureTLS: tc.insecure, Timeout: 5 * time.Second})
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
	d, err := New(BMC{Protocol: Redfish, Address: strings.TrimPrefix(srv.URL, "https://"), Username: f.user, Password: f.pass, InsecureTLS: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := d.Status(context.Background()); err != nil || st != Off {
		t.Fatalf("host:port address: status %q, %v", st, err)
	}
}
