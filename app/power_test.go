package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/power"
	"github.com/lpmos/lpmos/power/ipmisim"
)

func TestParseBMCURL(t *testing.T) {
	tests := []struct {
		in     string
		want   power.BMC
		errHas string
	}{
		{in: "ipmi://admin@10.0.0.21", want: power.BMC{Protocol: "ipmi", Address: "10.0.0.21", Username: "admin"}},
		{in: "ipmi://admin@10.0.0.21:6230", want: power.BMC{Protocol: "ipmi", Address: "10.0.0.21:6230", Username: "admin"}},
		{in: "ipmi://admin@[fd00::21]:623", want: power.BMC{Protocol: "ipmi", Address: "[fd00::21]:623", Username: "admin"}},
		{in: "redfish://root@bmc-r1.example", want: power.BMC{Protocol: "redfish", Address: "bmc-r1.example", Username: "root"}},
		{in: "redfish://root@bmc-r1.example:8443/System.Embedded.1", want: power.BMC{Protocol: "redfish", Address: "bmc-r1.example:8443", Username: "root", SystemID: "System.Embedded.1"}},
		{in: "redfish://root@bmc/redfish/v1/Systems/1", want: power.BMC{Protocol: "redfish", Address: "bmc", Username: "root", SystemID: "1"}},
		{in: "redfish+http://root@127.0.0.1:8000/1", want: power.BMC{Protocol: "redfish", Address: "http://127.0.0.1:8000", Username: "root", SystemID: "1"}},
		{in: "", errHas: "--bmc is required"},
		{in: "ipmi://admin:hunter2@10.0.0.21", errHas: "do not put the password in the URL"},
		{in: "ipmi://10.0.0.21", errHas: "name the BMC user"},
		{in: "ipmi://admin@", errHas: "host is missing"},
		{in: "ipmi://admin@10.0.0.21/1", errHas: "IPMI BMC has no path"},
		{in: "ipmi://admin@10.0.0.21:99999", errHas: "use 1-65535"},
		{in: "ipmi://a-very-long-user-name@10.0.0.21", errHas: "at most 16"},
		{in: "redfish://root@bmc/a/b", errHas: "system id only"},
		{in: "redfish://root@bmc?x=1", errHas: "no ?query"},
		{in: "snmp://root@pdu", errHas: `protocol "snmp"`},
		{in: "10.0.0.21", errHas: "protocol"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBMCURL(tc.in)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one with %q", err, tc.errHas)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// miniRedfish is a one-system Redfish service with basic auth, enough to
// run the CLI end to end (the full BMC-shaped server is in package power).
func miniRedfish(t *testing.T, user, pass string) (*httptest.Server, *[]string) {
	var actions []string
	state := "Off"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		p := strings.TrimSuffix(r.URL.Path, "/")
		if p == "/redfish/v1" {
			_ = json.NewEncoder(w).Encode(map[string]any{"@odata.id": "/redfish/v1/", "Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"}})
			return
		}
		if u, pw, ok := r.BasicAuth(); !ok || u != user || pw != pass {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"Base.1.8.GeneralError","message":"Unauthorized"}}`))
			return
		}
		switch {
		case p == "/redfish/v1/Systems":
			_ = json.NewEncoder(w).Encode(map[string]any{"Members": []map[string]string{{"@odata.id": "/redfish/v1/Systems/1"}}})
		case p == "/redfish/v1/Systems/1" && r.Method == http.MethodGet:
			_ = json.NewEncoder(w).Encode(map[string]any{"@odata.id": "/redfish/v1/Systems/1", "Id": "1", "PowerState": state,
				"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"}}})
		case p == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset":
			var body struct{ ResetType string }
			_ = json.NewDecoder(r.Body).Decode(&body)
			actions = append(actions, "reset "+body.ResetType)
			if body.ResetType == "On" {
				state = "On"
			}
			w.WriteHeader(http.StatusNoContent)
		case p == "/redfish/v1/Systems/1" && r.Method == http.MethodPatch:
			var body struct{ Boot map[string]string }
			_ = json.NewDecoder(r.Body).Decode(&body)
			actions = append(actions, "boot "+body.Boot["BootSourceOverrideTarget"]+" "+body.Boot["BootSourceOverrideEnabled"])
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"code":"Base.1.8.ResourceMissingAtURI","message":"not found"}}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &actions
}

func TestPowerCLI(t *testing.T) {
	const pass = "cli-s3cret"
	srv, actions := miniRedfish(t, "admin", pass)
	bmc := "redfish+http://admin@" + strings.TrimPrefix(srv.URL, "http://")
	pwFile := filepath.Join(t.TempDir(), "bmc.pw")
	if err := os.WriteFile(pwFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(t.TempDir(), "wrong.pw")
	if err := os.WriteFile(wrongFile, []byte("nope-nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     string // LPMOS_BMC_PASSWORD
		args    []string
		out     string
		errHas  string
		actions []string
	}{
		{name: "status from a password file", args: []string{"power", "status", "--bmc", bmc, "--bmc-password-file", pwFile}, out: "off\n"},
		{name: "on with the env password", env: pass, args: []string{"power", "on", "--bmc", bmc}, out: "powered on", actions: []string{"reset On"}},
		{name: "pxe once", env: pass, args: []string{"power", "pxe", "--bmc", bmc}, out: "next boot from PXE", actions: []string{"boot Pxe Once"}},
		{name: "pxe persistent", env: pass, args: []string{"power", "pxe", "--persistent", "--bmc", bmc}, actions: []string{"boot Pxe Continuous"}},
		{name: "no password", args: []string{"power", "status", "--bmc", bmc}, errHas: "no BMC password: put it in a file and pass --bmc-password-file FILE, or set LPMOS_BMC_PASSWORD"},
		{name: "missing password file", args: []string{"power", "status", "--bmc", bmc, "--bmc-password-file", "/nonexistent/pw"}, errHas: "--bmc-password-file"},
		{name: "wrong password", args: []string{"power", "on", "--bmc", bmc, "--bmc-password-file", wrongFile}, errHas: "401 (wrong username or password?)"},
		{name: "no system 7", env: pass, args: []string{"power", "on", "--bmc", bmc + "/7"}, errHas: `no system "7"; the service has: 1`},
		{name: "no --bmc", env: pass, args: []string{"power", "status"}, errHas: "name the machine: lpmos power status TASK-ID-or-MAC (through the server), or --bmc URL (directly)"},
		{name: "no subcommand args", env: pass, args: []string{"power", "on", "extra", "--bmc", bmc}, errHas: `with --bmc the machine is the BMC: drop "extra"`},
		{name: "persistent through the server", env: pass, args: []string{"power", "pxe", "--persistent", "00:1a:2b:3c:4d:5e"}, errHas: "--persistent is for --bmc (direct) mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(bmcPasswordEnv, tc.env)
			*actions = nil
			var out, errOut bytes.Buffer
			root := NewRoot("test", &out, &errOut)
			root.SetArgs(tc.args)
			err := root.ExecuteContext(context.Background())
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one with %q", err, tc.errHas)
				}
				if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "nope-nope") {
					t.Fatalf("error %q shows a password", err)
				}
				if len(*actions) > 0 {
					t.Fatalf("a failed command made the BMC do %v", *actions)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("output %q, want %q", out.String(), tc.out)
			}
			if strings.Contains(out.String()+errOut.String(), pass) {
				t.Error("output shows the password")
			}
			if strings.Join(*actions, ",") != strings.Join(tc.actions, ",") {
				t.Errorf("BMC actions %v, want %v", *actions, tc.actions)
			}
		})
	}
}

// TestPowerCLIIPMI runs lpmos power against a real IPMI BMC (ipmi_sim).
// The password comes from a file, not $LPMOS_BMC_PASSWORD (TestPowerCLI
// covers both), so the test runs in parallel: t.Setenv would keep it out.
func TestPowerCLIIPMI(t *testing.T) {
	t.Parallel()
	sim := ipmisim.Start(t, true)
	pwFile := filepath.Join(t.TempDir(), "bmc.pw")
	if err := os.WriteFile(pwFile, []byte(sim.Pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bmc := "ipmi://" + sim.User + "@127.0.0.1:" + strconv.Itoa(sim.Port)
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		root := NewRoot("test", &out, &errOut)
		root.SetArgs(append([]string{"power"}, append(args, "--bmc", bmc, "--bmc-password-file", pwFile)...))
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}
	steps := []struct {
		cmd    string
		out    string
		record string // file in the chassis_control dir
		want   string
	}{
		{cmd: "status", out: "off\n"},
		{cmd: "pxe", out: "next boot from PXE", record: "boot", want: "pxe"},
		{cmd: "on", out: "powered on", record: "power", want: "1"},
		{cmd: "status", out: "on\n"},
		{cmd: "off", out: "powered off", record: "power", want: "0"},
		{cmd: "disk", out: "next boot from disk", record: "boot", want: "default"},
	}
	for _, s := range steps {
		out, err := run(s.cmd)
		if err != nil {
			t.Fatalf("lpmos power %s: %v", s.cmd, err)
		}
		if !strings.Contains(out, s.out) {
			t.Fatalf("lpmos power %s: output %q, want %q", s.cmd, out, s.out)
		}
		if s.record != "" {
			if got := sim.Record(s.record); got != s.want {
				t.Fatalf("after lpmos power %s: chassis_control %s=%q, want %q", s.cmd, s.record, got, s.want)
			}
		}
	}
	if out, err := sim.Ipmitool("power", "status"); err != nil || !strings.Contains(out, "Chassis Power is off") {
		t.Fatalf("ipmitool power status: %v %s", err, out)
	}
	if err := os.WriteFile(pwFile, []byte("wrong-pw-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := run("on")
	if err == nil || !strings.Contains(err.Error(), "login refused") || strings.Contains(err.Error(), "wrong-pw-123") {
		t.Fatalf("wrong password: %v", err)
	}
	if got := sim.Record("power"); got != "0" {
		t.Fatalf("powered on with a wrong password: %q", got)
	}
}
