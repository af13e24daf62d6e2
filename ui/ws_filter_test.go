package ui_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
)

// TestWSSubscriptionFilters: /ws?status=installing&region=dc1 starts with
// the matching tasks only, gets a task whole when it enters the view,
// its progress while in it, its status when it leaves, and nothing about
// the other tasks; a bad status is refused with 400 before the upgrade.
func TestWSSubscriptionFilters(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := e.store
	other := walkToApproved(t, ctx, st, "52:54:00:00:0f:01")
	mine := walkToApproved(t, ctx, st, "52:54:00:00:0f:02")
	if _, err := st.ReportProgress(ctx, other.ID, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 1}); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest("GET", e.url+"/ws?status=bogus", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("?status=bogus: %d, want 400", resp.StatusCode)
	}

	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/ws?status=installing&region=dc1&task="+mine.ID, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.token}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(16 << 20)
	if m := readMsg(t, ctx, c); m.Type != "snapshot" || len(m.Tasks) != 0 {
		t.Fatalf("snapshot: %+v (the installing task is not in ?task=)", m)
	}
	// Progress of the other task and of mine while approved: not in view.
	if _, err := st.ReportProgress(ctx, other.ID, wire.Progress{Seq: 2, Stage: wire.StagePartitioning, Percentage: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReportProgress(ctx, mine.ID, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 5}); err != nil {
		t.Fatal(err)
	}
	m := readMsg(t, ctx, c)
	if m.Type != "task" || m.TaskID != mine.ID || m.Task == nil || m.Task.Status.Status != wire.StatusInstalling {
		t.Fatalf("entering the view: %+v", m)
	}
	var seen []wsMsg
	if _, err := st.Transition(ctx, mine.ID, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	for {
		m := readMsg(t, ctx, c)
		if m.TaskID != mine.ID {
			t.Fatalf("message about a task outside the view: %+v", m)
		}
		seen = append(seen, m)
		if m.Type == "status" {
			if m.Status != wire.StatusCancelled {
				t.Fatalf("leaving the view: %+v", m)
			}
			break
		}
	}
	// Out of view now: the other task's changes and mine send nothing.
	if _, err := st.ReportProgress(ctx, other.ID, wire.Progress{Seq: 3, Stage: wire.StagePartitioning, Percentage: 3}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer rcancel()
	if _, data, err := c.Read(rctx); err == nil {
		t.Fatalf("message after the task left the view: %s", data)
	}
}
