package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/internal/testenv"
)

// promtool skips the test on a machine without it (and fails it under
// LPMOS_TEST_REQUIRE_ALL=1, as .ci/run sets), like every tool check.
func promtool(t *testing.T) string {
	t.Helper()
	return testenv.RequireTool(t, "promtool", "prometheus")
}

// TestPrometheusRules: promtool accepts the shipped rules, and there is an
// alert on each thing an SRE must hear about.
func TestPrometheusRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "prometheus-rules.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules prometheus-rules.yaml: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool: %s", out)
	}
	data, err := os.ReadFile("prometheus-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"lpmos_etcd_alarm", "lpmos_etcd_db_size_bytes", "etcd_server_has_leader", "etcd_server_leader_changes_seen_total",
		"lpmos_install_duration_seconds", "lpmos_tasks_by_region", "lpmos_http_request_duration_seconds", "lpmos_agent_refusals_total",
		"lpmos_dhcp_packets_errors_total", "lpmos_tftp_transfers_total"} {
		if !strings.Contains(string(data), m) {
			t.Errorf("no alert uses %s", m)
		}
	}
}

// TestGrafanaDashboard: the dashboard is valid JSON with panels whose
// queries promtool parses (each becomes a recording rule of a temp rules
// file, with Grafana's variables filled in).
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) < 8 {
		t.Fatalf("dashboard uid %q title %q with %d panels", d.UID, d.Title, len(d.Panels))
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*", "$region", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
				continue
			}
			expr, _ := json.Marshal(vars.Replace(tg.Expr)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:q%d\n        expr: %s\n", n, expr)
			n++
		}
	}
	f := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query does not parse: %v\n%s\n%s", err, out, rules.String())
	}
	for _, m := range []string{"lpmos_tasks_by_region", "lpmos_install_duration_seconds", "lpmos_task_status_duration_seconds",
		"lpmos_http_request_duration_seconds", "lpmos_agent_refusals_total", "lpmos_tftp_transfers_total", "lpmos_dhcp_packets_answered_total",
		"etcd_server_has_leader", "lpmos_etcd_quota_bytes", "lpmos_etcd_alarm"} {
		if !strings.Contains(string(data), m) {
			t.Errorf("no panel shows %s", m)
		}
	}
}
