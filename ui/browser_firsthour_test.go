package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// pendingApproval creates a task and walks it to pending_approval (claimed,
// hardware reported), as a region and an agent would.
func pendingApproval(t *testing.T, ctx context.Context, st *store.Store, mac, host string) store.Task {
	t.Helper()
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04", Hostname: host})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimTask(ctx, task.ID, "agent-token"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetHardware(ctx, task.ID, sampleHardware(host)); err != nil {
		t.Fatal(err)
	}
	return task
}

func rowSel(id string) string { return fmt.Sprintf(`#task-scroll .tr[data-id="%s"]`, id) }

func click(t *testing.T, tab context.Context, sel string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
}

func taskStatus(t *testing.T, ctx context.Context, st *store.Store, id string) wire.Status {
	t.Helper()
	task, err := st.GetTask(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return task.Status.Status
}

// Issue 15 item 5: Approve asks first, naming the machine (hostname and
// MAC) and the disk it will erase; dismissing approves nothing.
func TestDashboardApproveConfirmationNamesMachine(t *testing.T) {
	ctx := context.Background()
	e := newLive(t)
	task := pendingApproval(t, ctx, e.store, "52:54:00:15:05:01", "web-15")
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "row", `document.querySelector('`+rowSel(task.ID)+`') !== null`)
	click(t, tab, rowSel(task.ID))
	poll(t, tab, "approve button", `!document.querySelector("#approve").hidden`)

	shown := problems.expectConfirm(false)
	click(t, tab, "#approve")
	msg := waitConfirm(t, shown)
	for _, want := range []string{"web-15", "52:54:00:15:05:01", "ERASE /dev/nvme0n1"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("confirmation %q does not name %q", msg, want)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if st := taskStatus(t, ctx, e.store, task.ID); st != wire.StatusPendingApproval {
		t.Fatalf("after dismissing the confirmation: %s, want pending_approval", st)
	}

	shown = problems.expectConfirm(true)
	click(t, tab, "#approve")
	waitConfirm(t, shown)
	poll(t, tab, "approved in the list", `document.querySelector('`+rowSel(task.ID)+` .badge').dataset.status === "approved"`)
	if st := taskStatus(t, ctx, e.store, task.ID); st != wire.StatusApproved {
		t.Fatalf("after accepting: %s, want approved", st)
	}
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}
