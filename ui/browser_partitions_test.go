package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// The task detail of the dashboard shows the partition table the agent
// left on disk (from its last configuring report), with the file system
// and role it found in each partition: live while the detail is open, and
// when a finished task is opened later.
func TestDashboardShowsPartitionsLeftOnDisk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	if err := e.store.PutImage(ctx, store.Image{OSType: "ubuntu", OSVersion: "22.04", Source: "/srv/ubuntu.img", Format: "raw",
		SHA256: strings.Repeat("ab", 32), Size: 1 << 30, FileSize: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "live", `document.querySelector("#conn").dataset.state === "live"`)

	parts := []wire.Partition{
		{Number: 1, Name: "EFI", Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", StartBytes: 1 << 20, SizeBytes: 512 << 20, FS: "vfat", Role: "esp"},
		{Number: 2, Name: "boot", Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", StartBytes: 513 << 20, SizeBytes: 1 << 30, FS: "ext4", Role: "boot"},
		{Number: 3, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", StartBytes: 1537 << 20, SizeBytes: 8 << 30, FS: "xfs", Role: "root"},
	}
	const want = "1|EFI|512 MiB|vfat|esp;2|boot|1.0 GiB|ext4|boot;3|—|8.0 GiB|xfs|root"
	rows := `Array.from(document.querySelectorAll("#d-parts tbody tr")).map((tr) => Array.from(tr.cells).map((c) => c.textContent).join("|")).join(";")`

	// install creates a task for mac and takes it to approved; report
	// sends the agent's last configuring report and completes it.
	install := func(mac string) string {
		resp, body := e.request(t, "POST", "/api/v1/tasks",
			`{"region_id":"dc1","target_mac":"`+mac+`","os_type":"ubuntu","os_version":"22.04","hostname":"db-01"}`,
			http.Header{"Authorization": {"Bearer " + e.token}})
		if resp.StatusCode != 201 {
			t.Fatalf("create task: %d %s", resp.StatusCode, body)
		}
		id := between(body, `"id":"`, `"`)
		for _, to := range []wire.Status{wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved} {
			if _, err := e.store.Transition(ctx, id, to, "test"); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	report := func(id string) {
		for i, p := range []wire.Progress{
			{Seq: 1, Stage: wire.StageConfiguring, Percentage: 90},
			{Seq: 2, Stage: wire.StageConfiguring, Percentage: 100, Message: "cloud-init seed written to partition 3 (xfs)", Partitions: parts},
			{Seq: 3, Stage: wire.StageCompleted, Percentage: 100},
		} {
			if _, err := e.store.ReportProgress(ctx, id, p); err != nil {
				t.Fatalf("report %d: %v", i, err)
			}
		}
		if _, err := e.store.Transition(ctx, id, wire.StatusCompleted, "install complete"); err != nil {
			t.Fatal(err)
		}
	}
	open := func(id string) {
		row := fmt.Sprintf(`#task-scroll .tr[data-id="%s"]`, id)
		poll(t, tab, "row appears", `document.querySelector('`+row+`') !== null`)
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(row))); err != nil {
			t.Fatalf("open detail: %v", err)
		}
		poll(t, tab, "detail open", `!document.querySelector("#detail").hidden && document.querySelector("#d-id").textContent === "`+id+`"`)
	}

	// Live: the detail is open while the agent reports.
	live := install("52:54:00:aa:0e:01")
	open(live)
	poll(t, tab, "no table before the report", `document.querySelector("#d-parts") === null`)
	report(live)
	poll(t, tab, "table after the report", rows+` === "`+want+`"`)
	poll(t, tab, "caption", `document.querySelector("#d-parts caption").textContent === "Partitions left on disk (attempt 1)"`)

	// Later: a finished task opened from the list.
	done := install("52:54:00:aa:0e:02")
	report(done)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#d-close"))); err != nil {
		t.Fatal(err)
	}
	open(done)
	poll(t, tab, "table of the finished task", rows+` === "`+want+`"`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}
