package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
)

func TestMetricsCountTasksAndClients(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 3 {
		if _, err := e.store.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: fmt.Sprintf("02:00:00:00:0a:%02x", i), OSType: "ubuntu", OSVersion: "22.04"}); err != nil {
			t.Fatal(err)
		}
	}
	walkToApproved(t, ctx, e.store, "02:00:00:00:0b:01")
	c := e.dialWS(t, ctx)
	defer c.CloseNow()
	readMsg(t, ctx, c) // the snapshot: the client is registered

	want := []string{
		`lpmos_tasks{status="pending"} 3`,
		`lpmos_tasks{status="approved"} 1`,
		`lpmos_tasks{status="completed"} 0`,
		`lpmos_websocket_clients 1`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	}
	var body string
	for ctx.Err() == nil {
		// /metrics is open like /health: a scraper carries no token.
		resp, b := e.request(t, "GET", "/metrics", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
		}
		body = b
		missing := false
		for _, w := range want {
			missing = missing || !strings.Contains(body, w)
		}
		if !missing {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}
