package ui_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// TestMetricsScrape drives one task to completed and one to failed
// through the store, and checks the scrape: install durations by OS and
// outcome, time in each status, tasks by region and status, HTTP requests
// by route pattern (not the raw path) and code, and etcd's own health.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := context.Background()
	tok, _, err := st.EnsureAdminToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	e := serveLive(t, st, tok, ui.Config{Store: st, Health: reg, Version: "test"})

	mk := func(mac, osType, region string) store.Task {
		task, err := st.CreateTask(ctx, store.Spec{RegionID: region, TargetMAC: mac, OSType: osType, OSVersion: "1"})
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	toInstalling := func(id string) {
		t.Helper()
		steps := []func() error{
			func() error { _, err := st.ClaimTask(ctx, id, ""); return err },
			func() error { _, err := st.SetHardware(ctx, id, wire.Hardware{BootMode: "bios"}); return err },
			func() error { _, err := st.Transition(ctx, id, wire.StatusApproved, "test"); return err },
			func() error {
				_, err := st.ReportProgress(ctx, id, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 5})
				return err
			},
		}
		for i, s := range steps {
			if err := s(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
	}
	done := mk("00:1a:2b:3c:4d:71", "debian", "dc1")
	failed := mk("00:1a:2b:3c:4d:72", "ubuntu", "dc2")
	mk("00:1a:2b:3c:4d:73", "ubuntu", "dc2") // stays pending
	toInstalling(done.ID)
	toInstalling(failed.ID)
	for i, p := range []wire.Progress{
		{Seq: 2, Stage: wire.StageDownloading, Percentage: 30},
		{Seq: 3, Stage: wire.StageInstalling, Percentage: 70},
		{Seq: 4, Stage: wire.StageConfiguring, Percentage: 100},
		{Seq: 5, Stage: wire.StageCompleted, Percentage: 100},
	} {
		if _, err := st.ReportProgress(ctx, done.ID, p); err != nil {
			t.Fatalf("progress %d: %v", i, err)
		}
	}
	if _, err := st.Transition(ctx, done.ID, wire.StatusCompleted, "install completed"); err != nil { // as the agent API does
		t.Fatal(err)
	}
	if _, err := st.Fail(ctx, failed.ID, "disk on fire", nil); err != nil {
		t.Fatal(err)
	}
	// Requests for the HTTP metrics: the route pattern is the label.
	for _, path := range []string{"/api/v1/tasks/" + done.ID, "/api/v1/tasks/" + failed.ID, "/api/v1/tasks/nope", "/no/such/page"} {
		req, _ := http.NewRequest("GET", e.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	want := []string{
		`lpmos_install_duration_seconds_count{os="debian",outcome="completed"} 1`,
		`lpmos_install_duration_seconds_count{os="ubuntu",outcome="failed"} 1`,
		`lpmos_task_status_duration_seconds_count{status="pending"} 2`,
		`lpmos_task_status_duration_seconds_count{status="installing"} 2`,
		`lpmos_tasks_by_region{region="dc1",status="completed"} 1`,
		`lpmos_tasks_by_region{region="dc2",status="failed"} 1`,
		`lpmos_tasks_by_region{region="dc2",status="pending"} 1`,
		`lpmos_http_request_duration_seconds_count{code="200",method="GET",region="",route="/api/v1/tasks/{id}",server="control-plane"} 2`,
		`lpmos_http_request_duration_seconds_count{code="404",method="GET",region="",route="/api/v1/tasks/{id}",server="control-plane"} 1`,
		`lpmos_http_request_duration_seconds_bucket{code="200",method="GET",region="",route="/api/v1/tasks/{id}",server="control-plane",le="+Inf"} 2`,
		`etcd_server_has_leader 1`,
		`etcd_server_leader_changes_seen_total`,
		`etcd_mvcc_db_total_size_in_bytes`,
		`etcd_server_quota_backend_bytes`,
		`lpmos_etcd_alarm{type="NOSPACE"} 0`,
	}
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(data)
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape lacks:\n%s", strings.Join(missing, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, raw := range []string{done.ID, failed.ID, "/no/such/page"} {
		if strings.Contains(body, fmt.Sprintf("route=%q", raw)) || strings.Contains(body, raw+`"`) {
			t.Errorf("a raw path (%s) became a label", raw)
		}
	}
}
