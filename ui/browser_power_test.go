package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/store"
)

// TestDashboardPowerButtons: a task with a BMC shows its power state in
// the list and the detail, live, and the buttons queue actions for the
// region (what it then does is powermgr's test).
func TestDashboardPowerButtons(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLiveTLS(t)
	resp, body := e.request(t, "POST", "/api/v1/tasks",
		`{"region_id":"dc1","target_mac":"52:54:00:aa:13:01","os_type":"ubuntu","os_version":"22.04","hostname":"bmc-01",
		"bmc":{"protocol":"ipmi","address":"10.0.0.21","username":"admin","password":"dash-pw"}}`,
		http.Header{"Authorization": {"Bearer " + e.token}})
	if resp.StatusCode != 201 {
		t.Fatalf("create task: %d %s", resp.StatusCode, body)
	}
	id := between(body, `"id":"`, `"`)
	if err := e.store.SetPowerState(ctx, id, store.PowerState{State: "on", CheckedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}

	tab := newBrowser(t, e.spki)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "live", `document.querySelector("#conn").dataset.state === "live"`)
	row := fmt.Sprintf(`document.querySelector('#task-scroll .tr[data-id="%s"]')`, id)
	poll(t, tab, "row with a power badge", row+` !== null && `+row+`.querySelector(".pw") !== null && `+row+`.querySelector(".pw").dataset.power === "on"`)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#task-scroll .tr[data-id="%s"]`, id)))); err != nil {
		t.Fatalf("open detail: %v", err)
	}
	poll(t, tab, "detail power", `!document.querySelector("#d-power").hidden && document.querySelector("#d-power-badge").textContent === "powered on"`)
	if got := eval[string](t, tab, `document.querySelector("#d-power-bmc").textContent`); got == "" || !strings.Contains(got, "ipmi 10.0.0.21, user admin") {
		t.Fatalf("BMC line %q", got)
	}

	// The BMC stops answering: the detail says so, live.
	if err := e.store.SetPowerState(ctx, id, store.PowerState{State: "unknown", CheckedAt: time.Now().UTC(), Error: "ipmi BMC 10.0.0.21: no answer"}); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "BMC not answering", `document.querySelector("#d-power-badge").textContent === "BMC not answering" && document.querySelector("#d-power-error").textContent.includes("no answer")`)

	// The buttons queue actions for the owning region.
	for _, action := range []string{"pxe", "on"} {
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`#d-power [data-power-action="`+action+`"]`))); err != nil {
			t.Fatalf("click %s: %v", action, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			reqs, _, err := e.store.PowerRequests(ctx, "dc1")
			if err != nil {
				t.Fatal(err)
			}
			if len(reqs) > 0 && reqs[len(reqs)-1].Action == action && reqs[len(reqs)-1].TaskID == id {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("button %s queued %+v", action, reqs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The region's result arrives as a task event: the timeline shows it.
	if err := e.store.AddPowerEvent(ctx, id, "power on (requested by operator): powered on (ipmi BMC 10.0.0.21)"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.AddPowerEvent(ctx, id, "power cycle (requested by operator) failed: power cycle failed after 4 tries: ipmi BMC 10.0.0.21: no answer"); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "power events in the timeline", `[...document.querySelectorAll("#timeline li")].some((li) => li.querySelector("b").textContent === "Power" && li.textContent.includes("powered on (ipmi BMC 10.0.0.21)")) &&
		[...document.querySelectorAll("#timeline li")].some((li) => li.querySelector("b").textContent === "Power action failed" && li.dataset.status === "failed")`)
	if html := eval[string](t, tab, `document.documentElement.outerHTML`); strings.Contains(html, "dash-pw") {
		t.Fatal("the page holds the BMC password")
	}
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems: %v", p)
	}
}
