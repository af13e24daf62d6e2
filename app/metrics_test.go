package app_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServeScrapeHasTheDeployedMetrics: every metric the shipped alert
// rules and Grafana dashboard (deploy/) use appears in a scrape of a real
// `lpmos serve` after a little traffic: agent API calls (one refused),
// a task the region claims, HTTP requests on both ports.
func TestServeScrapeHasTheDeployedMetrics(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	p.waitHealthy(t, 30*time.Second)
	tok := p.token(t)
	if _, err := apiDo(t, "POST", p.url+"/api/v1/tasks", tok, map[string]any{
		"region_id": "dc1", "target_mac": "00:1a:2b:3c:4d:91", "os_type": "ubuntu", "os_version": "22.04", "allow_missing_image": true,
	}, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(p.agentURL()+"/api/v1/agent/progress", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("progress without a session: %d", resp.StatusCode)
	}

	re := regexp.MustCompile(`\b(?:lpmos|etcd)_[a-z0-9_]+`)
	want := map[string]bool{}
	for _, f := range []string{"../deploy/prometheus-rules.yaml", "../deploy/grafana-dashboard.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllString(string(data), -1) {
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				m = strings.TrimSuffix(m, suf)
			}
			want[m] = true
		}
	}
	// Observed only when an install ends: ui's TestMetricsScrape drives
	// installs to completed and failed and finds it.
	delete(want, "lpmos_install_duration_seconds")
	for _, must := range []string{"lpmos_http_request_duration_seconds", "lpmos_agent_refusals_total", "lpmos_tasks_by_region",
		"lpmos_task_status_duration_seconds", "etcd_server_leader_changes_seen_total", "lpmos_tftp_transfers_total"} {
		if !want[must] {
			t.Errorf("deploy/ does not use %s", must)
		}
	}

	var missing []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(data)
		missing = missing[:0]
		for m := range want {
			if !strings.Contains(body, "\n"+m+" ") && !strings.Contains(body, "\n"+m+"{") &&
				!strings.Contains(body, "\n"+m+"_count") {
				missing = append(missing, m)
			}
		}
		for _, s := range []string{`route="/api/v1/tasks",server="control-plane"`, `reason="unauthorized",region="dc1",route="/api/v1/agent/progress"`,
			`code="401",method="POST",region="dc1",route="/api/v1/agent/progress",server="agent"`} {
			if !strings.Contains(body, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scrape lacks what deploy/ uses: %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
