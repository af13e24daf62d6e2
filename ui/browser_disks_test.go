package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// confirmAnswer is one window.confirm a test expects: answered with
// accept, its text kept for the test to check.
type confirmAnswer struct {
	accept bool
	shown  chan string
}

// expectConfirm makes the next confirm dialog expected (not a page
// problem) and answered with accept; the returned channel gets its text.
func (w *pageWatch) expectConfirm(accept bool) <-chan string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.confirm = &confirmAnswer{accept: accept, shown: make(chan string, 1)}
	return w.confirm.shown
}

// answer consumes the expected confirm, if this dialog is one.
func (w *pageWatch) answer(ev *page.EventJavascriptDialogOpening) (accept, expected bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.confirm
	if c == nil || ev.Type != page.DialogTypeConfirm {
		return false, false
	}
	w.confirm = nil
	c.shown <- ev.Message
	return c.accept, true
}

func waitConfirm(t *testing.T, shown <-chan string) string {
	t.Helper()
	select {
	case msg := <-shown:
		return msg
	case <-time.After(15 * time.Second):
		t.Fatal("no confirmation dialog")
	}
	return ""
}

// The dashboard names the disk a task awaiting approval will erase, in the
// list and the detail; Approve asks for confirmation naming that disk:
// cancelling approves nothing, confirming approves that disk.
func TestDashboardApproveNamesTheDisk(t *testing.T) {
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

	resp, body := e.request(t, "POST", "/api/v1/tasks",
		`{"region_id":"dc1","target_mac":"52:54:00:aa:0d:01","os_type":"ubuntu","os_version":"22.04","hostname":"db-01","root_device_hints":{"serial":"S4EMNX0R123456"}}`,
		http.Header{"Authorization": {"Bearer " + e.token}})
	if resp.StatusCode != 201 {
		t.Fatalf("create task: %d %s", resp.StatusCode, body)
	}
	id := between(body, `"id":"`, `"`)
	row := fmt.Sprintf(`document.querySelector('#task-scroll .tr[data-id="%s"]')`, id)
	poll(t, tab, "row appears", row+` !== null`)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#task-scroll .tr[data-id="%s"]`, id)))); err != nil {
		t.Fatalf("open detail: %v", err)
	}
	if _, err := e.store.ClaimTask(ctx, id, "agent-token"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SetHardware(ctx, id, fourDisks(t)); err != nil {
		t.Fatal(err)
	}
	const desc = "/dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456"
	poll(t, tab, "detail names the disk", `(() => { const d = document.querySelector("#d-disk");
		return !d.hidden && d.textContent.startsWith("Will erase `+desc+`"); })()`)
	poll(t, tab, "row names the disk", row+`.querySelector(".ptext").textContent === "will erase /dev/nvme0n1, 480 GB"`)
	// The disk table comes from the full task, read on demand.
	poll(t, tab, "target marked in the disk table", `(() => { const td = document.querySelector("#hw-disks tr.target td");
		return td !== null && td.textContent === "nvme0n1"; })()`)
	poll(t, tab, "approve button", `!document.querySelector("#approve").hidden`)

	// Cancel: nothing approved.
	shown := problems.expectConfirm(false)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#approve"))); err != nil {
		t.Fatalf("click approve: %v", err)
	}
	if msg := waitConfirm(t, shown); !strings.Contains(msg, "ERASE "+desc) || !strings.Contains(msg, "db-01") {
		t.Fatalf("confirmation %q does not name the disk %q", msg, desc)
	}
	time.Sleep(500 * time.Millisecond)
	if task, err := e.store.GetTask(ctx, id); err != nil || task.Status.Status != wire.StatusPendingApproval {
		t.Fatalf("after cancelling the confirmation: %+v %v", task.Status, err)
	}

	// The server's choice changes (the machine rebooted with another
	// disk order): the confirmation follows.
	hw := fourDisks(t)
	hw.Disks[0].Name = "nvme1n1"
	if _, err := e.store.SetHardware(ctx, id, hw); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "detail follows the new choice", `document.querySelector("#d-disk").textContent.startsWith("Will erase /dev/nvme1n1, 480 GB")`)

	// Confirm: approved, on that disk.
	shown = problems.expectConfirm(true)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#approve"))); err != nil {
		t.Fatalf("click approve: %v", err)
	}
	if msg := waitConfirm(t, shown); !strings.Contains(msg, "ERASE /dev/nvme1n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456") {
		t.Fatalf("confirmation %q does not name nvme1n1", msg)
	}
	poll(t, tab, "approved", row+`.querySelector(".badge").dataset.status === "approved"`)
	poll(t, tab, "detail says erasing", `document.querySelector("#d-disk").textContent.startsWith("Erasing /dev/nvme1n1")`)
	task, err := e.store.GetTask(ctx, id)
	if err != nil || task.Status.Status != wire.StatusApproved || task.TargetDisk == nil || task.TargetDisk.Name != "nvme1n1" {
		t.Fatalf("store after approve: %+v %+v %v", task.Status, task.TargetDisk, err)
	}

	// The create dialog takes hints as the CLI does; a bad one is refused
	// in the dialog, nothing created.
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#new-task"))); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "create dialog", `document.querySelector("#create-dialog").open`)
	for sel, v := range map[string]string{`[name="target_mac"]`: "52:54:00:aa:0d:02", `[name="region_id"]`: "dc1",
		`[name="os_type"]`: "ubuntu", `[name="os_version"]`: "22.04", `[name="root_device"]`: "serial=ZC1A2B3C,size=1T"} {
		setInput(t, tab, "#create-form "+sel, v, "input")
	}
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#create-submit"))); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "bad hint refused", `document.querySelector("#create-error").textContent.includes("unknown")`)
	if tasks, _, _ := e.store.ListTasks(ctx, store.Filter{MAC: "52:54:00:aa:0d:02"}); len(tasks) != 0 {
		t.Fatalf("a refused hint created %d task(s)", len(tasks))
	}
	setInput(t, tab, `#create-form [name="root_device"]`, "serial=ZC1A2B3C, min-size=1T, rotational=true", "input")
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#create-submit"))); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "dialog closed", `!document.querySelector("#create-dialog").open`)
	tasks, _, err := e.store.ListTasks(ctx, store.Filter{MAC: "52:54:00:aa:0d:02"})
	if err != nil || len(tasks) != 1 {
		t.Fatalf("created from the dialog: %d, %v", len(tasks), err)
	}
	if h := tasks[0].Spec.RootDeviceHints; h == nil || h.Serial != "ZC1A2B3C" || h.MinSizeBytes != 1e12 || h.Rotational == nil || !*h.Rotational {
		t.Fatalf("hints from the dialog: %+v", h)
	}

	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}
