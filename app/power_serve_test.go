package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/power/ipmisim"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestPowerThroughServe: a real `lpmos serve` and a real IPMI BMC
// (ipmi_sim). `task create --bmc` makes the region set PXE and power the
// machine on; `lpmos power status|off MAC` go through the server. The BMC
// password appears in no CLI output, no log line and no etcd value.
func TestPowerThroughServe(t *testing.T) {
	t.Parallel()
	sim := ipmisim.Start(t, true)
	dir := t.TempDir()
	pwFile := filepath.Join(t.TempDir(), "bmc.pw")
	if err := os.WriteFile(pwFile, []byte(sim.Pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, dir, "--bmc-poll-interval", "300ms", "--bmc-retry-backoff", "100ms", "--bmc-reboot-delay", "10ms", "--log-level", "debug")
	p.waitHealthy(t, 30*time.Second)
	const mac = "52:54:00:13:13:01"
	var outputs strings.Builder
	cli := func(args ...string) string {
		t.Helper()
		out, err := p.cli(t, args...)
		outputs.WriteString(out)
		if err != nil {
			outputs.WriteString(err.Error())
			t.Fatalf("lpmos %v: %v", args, err)
		}
		return out
	}
	bmcURL := fmt.Sprintf("ipmi://%s@127.0.0.1:%d", sim.User, sim.Port)
	// Bad input first: refused, nothing written.
	if _, err := p.cli(t, "task", "create", "--mac", mac, "--os", "debian", "--os-version", "12", "--bmc", "ipmi://admin:pw@127.0.0.1"); err == nil || !strings.Contains(err.Error(), "do not put the password in the URL") {
		t.Fatalf("password in the URL: %v", err)
	}
	out := cli("task", "create", "--mac", mac, "--os", "debian", "--os-version", "12", "--allow-missing-image", "--bmc", bmcURL, "--bmc-password-file", pwFile, "-o", "json")
	var task store.Task
	if err := json.Unmarshal([]byte(out), &task); err != nil || task.BMC == nil || !task.BMC.PasswordSet {
		t.Fatalf("task create answered %s (%v)", out, err)
	}

	// The region claims it and boots it into PXE over IPMI.
	waitFor(t, "ipmi_sim powered on with PXE next", func() bool { return sim.Record("power") == "1" && sim.Record("boot") == "pxe" })
	waitFor(t, "power status on", func() bool { return strings.TrimSpace(cli("power", "status", mac)) == "on" })
	out = cli("power", "off", task.ID)
	if !strings.Contains(out, "power off requested; region dc1 performs it") {
		t.Fatalf("power off: %q", out)
	}
	waitFor(t, "ipmi_sim off", func() bool { return sim.Record("power") == "0" })
	if out, _ := sim.Ipmitool("power", "status"); !strings.Contains(out, "Chassis Power is off") {
		t.Fatalf("ipmitool: %s", out)
	}
	waitFor(t, "power status off", func() bool { return strings.TrimSpace(cli("power", "status", mac)) == "off" })
	// The region's BMC calls are counted in /metrics by step and outcome.
	_, scrape := p.get(t, "/metrics")
	for _, want := range []string{
		`lpmos_bmc_calls_total{outcome="ok",region="dc1",step="power off"} `,
		`lpmos_bmc_calls_total{outcome="ok",region="dc1",step="status"} `,
		`lpmos_bmc_call_seconds_count{region="dc1",step="power off"} `,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if out := cli("task", "get", task.ID); !strings.Contains(out, "bmc: ipmi BMC 127.0.0.1:"+strconv.Itoa(sim.Port)+", user admin; power: off") {
		t.Fatalf("task get lacks the BMC and power line:\n%s", out)
	}
	out = cli("task", "get", task.ID, "-o", "json")
	for _, want := range []string{"boot into PXE (attempt 1): next boot from pxe, powered on", "power off (requested by", "ipmi BMC 127.0.0.1:" + strconv.Itoa(sim.Port)} {
		if !strings.Contains(out, want) {
			t.Fatalf("task events lack %q:\n%s", want, out)
		}
	}

	// Grep for the password: CLI output, the server's log, every etcd key
	// and value (read with the member certificate, as etcdctl would).
	if strings.Contains(outputs.String(), sim.Pass) {
		t.Fatal("a CLI output holds the BMC password")
	}
	if strings.Contains(p.logText(), sim.Pass) {
		t.Fatal("the server log holds the BMC password")
	}
	if !strings.Contains(p.logText(), "power: ") {
		t.Fatal("the server log has no power lines (is the capture working?)")
	}
	cfg := storetest.ClientOf(store.Config{DataDir: dir, ClientURL: fmt.Sprintf("https://127.0.0.1:%d", p.ports[2])})
	cfg.Logger = slog.New(slog.DiscardHandler)
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, err := st.Client().Get(context.Background(), "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		if strings.Contains(string(kv.Key)+string(kv.Value), sim.Pass) {
			t.Fatalf("etcd key %s holds the BMC password in the clear", kv.Key)
		}
	}
	t.Logf("scanned %d etcd keys", len(all.Kvs))
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
