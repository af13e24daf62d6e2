package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
)

// GET /watch of a task that has ended sends the snapshot and closes the
// stream (it used to stay open forever); a task ending while watched ends
// the stream after its status line.
func TestWatchEndsOnTerminalState(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	ctx := context.Background()
	spec := func(mac string) store.Spec {
		return store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04"}
	}
	watch := func(id string) (lines []ui.WatchLine, closed chan struct{}) {
		req, _ := http.NewRequest("GET", e.url+"/api/v1/tasks/"+id+"/watch", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("watch: %v %v", err, resp)
		}
		closed = make(chan struct{})
		out := make(chan ui.WatchLine, 16)
		go func() {
			defer close(closed)
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				var l ui.WatchLine
				if json.Unmarshal(sc.Bytes(), &l) == nil {
					out <- l
				}
			}
			close(out)
		}()
		select {
		case l := <-out:
			lines = append(lines, l)
		case <-time.After(5 * time.Second):
			t.Fatal("no snapshot")
		}
		go func() {
			for l := range out {
				_ = l
			}
		}()
		return lines, closed
	}
	ended, err := e.store.CreateTask(ctx, spec("52:54:00:15:01:01"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Transition(ctx, ended.ID, wire.StatusCancelled, "cancelled by test"); err != nil {
		t.Fatal(err)
	}
	lines, closed := watch(ended.ID)
	if lines[0].Task == nil || lines[0].Task.Status.Status != wire.StatusCancelled {
		t.Fatalf("snapshot %+v", lines[0])
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch of an ended task is still open after 5s")
	}

	live, err := e.store.CreateTask(ctx, spec("52:54:00:15:01:02"))
	if err != nil {
		t.Fatal(err)
	}
	_, closed = watch(live.ID)
	select {
	case <-closed:
		t.Fatal("the watch of an active task closed")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := e.store.Transition(ctx, live.ID, wire.StatusCancelled, "cancelled by test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch is still open 5s after the task was cancelled")
	}
}
