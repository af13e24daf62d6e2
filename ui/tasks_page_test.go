package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// walkPages fetches every page of GET /api/v1/tasks?limit=&<query> and
// returns the ids in order, failing on a page out of order.
func walkPages(t *testing.T, e *liveEnv, limit int, query string) []string {
	t.Helper()
	var ids []string
	var last *store.Task
	cont := ""
	for pages := 0; ; pages++ {
		u := fmt.Sprintf("%s/api/v1/tasks?limit=%d&%s", e.url, limit, query)
		if cont != "" {
			u += "&continue=" + url.QueryEscape(cont)
		}
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page ui.TaskList
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("page %d: %d %v", pages, resp.StatusCode, err)
		}
		if len(page.Tasks) > limit || page.Count != len(page.Tasks) {
			t.Fatalf("page %d: %d tasks (count %d), limit %d", pages, len(page.Tasks), page.Count, limit)
		}
		for i := range page.Tasks {
			tk := &page.Tasks[i]
			if last != nil && (tk.Spec.CreatedAt.After(last.Spec.CreatedAt) || tk.Spec.CreatedAt.Equal(last.Spec.CreatedAt) && tk.ID <= last.ID) {
				t.Fatalf("page %d: %s (%s) after %s (%s): not newest first", pages, tk.ID, tk.Spec.CreatedAt, last.ID, last.Spec.CreatedAt)
			}
			last = tk
			ids = append(ids, tk.ID)
		}
		if page.Continue == "" {
			return ids
		}
		cont = page.Continue
	}
}

// TestTaskPagesWalkEveryTaskOnceWhileCreating: 10,000 tasks, walked in
// pages of 250 while more tasks are being created: each of the 10,000
// exactly once, newest first, no task twice; filters apply server-side;
// bad parameters are refused with 400 and the unpaged list is unchanged.
func TestTaskPagesWalkEveryTaskOnceWhileCreating(t *testing.T) {
	heavyTurn(t) // 10,000 tasks under -race are CPU: one heavy test at a time
	// The first 10,000 are written before the control plane serves (its
	// hub loads them once instead of following 40,000 writes).
	st := storetest.New(t)
	ctx := context.Background()
	const n = 10000
	mac := func(i int) string {
		return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
	}
	var (
		initial = map[string]bool{}
		wg      sync.WaitGroup
	)
	start := time.Now()
	for lo := 1; lo <= n; lo += 1000 {
		var specs []store.Spec
		for i := lo; i < lo+1000; i++ {
			region := "dc1"
			if i%10 == 0 {
				region = "dc2"
			}
			specs = append(specs, store.Spec{RegionID: region, TargetMAC: mac(i), OSType: "ubuntu", OSVersion: "22.04"})
		}
		tasks, err := st.CreateTasks(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			initial[task.ID] = true
		}
	}
	t.Logf("created %d tasks in %v", n, time.Since(start).Round(time.Millisecond))
	e := newLiveOn(t, st)
	deadline := time.Now().Add(30 * time.Second)
	for len(walkPages(t, e, 1000, "")) < n {
		if time.Now().After(deadline) {
			t.Fatal("the live view never held every task")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Creations continue during the walk.
	stop := make(chan struct{})
	var created atomic.Int64
	wg.Go(func() {
		for i := n + 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.store.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: mac(i), OSType: "ubuntu", OSVersion: "22.04"}); err != nil {
				t.Error(err)
				return
			}
			created.Add(1)
		}
	})
	start = time.Now()
	ids := walkPages(t, e, 250, "")
	close(stop)
	wg.Wait()
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
		if seen[id] > 1 {
			t.Fatalf("task %s listed twice", id)
		}
	}
	for id := range initial {
		if seen[id] != 1 {
			t.Fatalf("task %s listed %d times, want once", id, seen[id])
		}
	}
	t.Logf("walked %d tasks in pages of 250 in %v while %d more were created", len(ids), time.Since(start).Round(time.Millisecond), created.Load())
	if created.Load() == 0 {
		t.Error("no task was created during the walk: the test proves nothing")
	}

	// Server-side filters.
	dc2 := walkPages(t, e, 300, "region=dc2")
	if len(dc2) != n/10 {
		t.Errorf("region=dc2: %d tasks, want %d", len(dc2), n/10)
	}
	if got := walkPages(t, e, 50, "status=completed"); len(got) != 0 {
		t.Errorf("status=completed: %d tasks, want 0", len(got))
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "continue=@@", "limit=5&status=nope"} {
		req, _ := http.NewRequest("GET", e.url+"/api/v1/tasks?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || body.Error == "" {
			t.Errorf("?%s: %d %q, want 400 with an error", q, resp.StatusCode, body.Error)
		}
	}
}
