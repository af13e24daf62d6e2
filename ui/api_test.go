package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

type apiEnv struct {
	url       string
	token     string
	store     *store.Store
	imagesDir string // the server's images directory (POST /api/v1/images)
}

func newAPI(t *testing.T) *apiEnv {
	t.Helper()
	st := storetest.New(t)
	tok, _, err := st.EnsureAdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seedCreatable(t, st) // ui/create_checks_test.go: region dc1 known, image ubuntu 22.04
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	imagesDir := t.TempDir()
	srv, err := ui.New(ui.Config{Store: st, Health: reg, Version: "test", Images: imagesrc.Policy{Dir: imagesDir}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &apiEnv{url: hs.URL, token: tok, store: st, imagesDir: imagesDir}
}

// do sends a request with the admin token and decodes the JSON answer.
func (e *apiEnv) do(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	return e.doAuth(t, "Bearer "+e.token, method, path, body, out)
}

func (e *apiEnv) doAuth(t *testing.T, auth, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var e wire.Error
		if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: status %d without a JSON error: %s", method, path, resp.StatusCode, data)
		}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

const createBody = `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5e","os_type":"ubuntu","os_version":"22.04"}`

func TestCreateGetListApprove(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	unseedImage(t, e) // this test adds the image after creating the task
	var task store.Task
	if code := e.do(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","allow_missing_image":true,"target_mac":"00-1A-2B-3C-4D-5E","os_type":"ubuntu","os_version":"22.04","hostname":"web-1","ssh_authorized_keys":["ssh-ed25519 AAAAC3Nz op@lab"],"user_data":"#cloud-config\n"}`, &task); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if task.Spec.TargetMAC != "00:1a:2b:3c:4d:5e" || task.Status.Status != wire.StatusPending || task.Spec.Hostname != "web-1" {
		t.Fatalf("created task = %+v", task)
	}
	var detail ui.TaskDetail
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &detail); code != 200 || detail.ID != task.ID || len(detail.Events) != 1 {
		t.Fatalf("get: %d %+v", code, detail)
	}
	var events []store.Event
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID+"/events", "", &events); code != 200 || len(events) != 1 || events[0].To != wire.StatusPending {
		t.Fatalf("events: %d %+v", code, events)
	}
	var list ui.TaskList
	if code := e.do(t, "GET", "/api/v1/tasks?status=pending&region=dc1", "", &list); code != 200 || list.Count != 1 {
		t.Fatalf("list: %d %+v", code, list)
	}
	if e.do(t, "GET", "/api/v1/tasks?region=dc9", "", &list); list.Count != 0 {
		t.Fatalf("region filter: %d", list.Count)
	}
	// Approve is refused (409, naming the status) until the agent reported.
	var apiErr wire.Error
	if code := e.do(t, "PUT", "/api/v1/tasks/"+task.ID+"/approve", "", &apiErr); code != 409 || !strings.Contains(apiErr.Error, "pending") {
		t.Fatalf("early approve: %d %q", code, apiErr.Error)
	}
	ctx := context.Background()
	if _, err := e.store.ClaimTask(ctx, task.ID, store.NewSecret()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SetHardware(ctx, task.ID, wire.Hardware{BootMode: "bios"}); err != nil {
		t.Fatal(err)
	}
	// No image yet: the approval fails the task with the fix in the message.
	if code := e.do(t, "PUT", "/api/v1/tasks/"+task.ID+"/approve", "", &apiErr); code != 422 || !strings.Contains(apiErr.Error, "lpmos image add ubuntu 22.04") {
		t.Fatalf("approve without image: %d %q", code, apiErr.Error)
	}
	var img store.Image
	imgPath := filepath.Join(e.imagesDir, "ubuntu.img")
	if err := os.WriteFile(imgPath, bytes.Repeat([]byte("u"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := e.do(t, "POST", "/api/v1/images", `{"os_type":"ubuntu","os_version":"22.04","source":"`+imgPath+`","size":1048576}`, &img); code != 201 || img.Size != 1<<20 || img.Format != "raw" {
		t.Fatalf("add image: %d %+v", code, img)
	}
	if code := e.do(t, "POST", "/api/v1/tasks/"+task.ID+"/retry", "", &task); code != 200 || task.Status.Attempt != 2 {
		t.Fatalf("retry: %d %+v", code, task.Status)
	}
	if _, err := e.store.ClaimTask(ctx, task.ID, store.NewSecret()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.SetHardware(ctx, task.ID, wire.Hardware{BootMode: "bios"}); err != nil {
		t.Fatal(err)
	}
	// Two operators click Approve at once: one 200, one 409.
	codes := make(chan int, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- e.do(t, "PUT", "/api/v1/tasks/"+task.ID+"/approve", "", nil)
		}()
	}
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for c := range codes {
		got[c]++
	}
	if got[200] != 1 || got[409] != 1 {
		t.Fatalf("concurrent approve codes = %v, want one 200 and one 409", got)
	}
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID, "", &task); code != 200 || task.Status.Status != wire.StatusCancelled {
		t.Fatalf("cancel: %d %s", code, task.Status.Status)
	}
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID, "", &apiErr); code != 409 || !strings.Contains(apiErr.Error, "cancelled") {
		t.Fatalf("cancel twice: %d %q", code, apiErr.Error)
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	big := `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5e","os_type":"ubuntu","os_version":"22.04","user_data":"` + strings.Repeat("x", 1<<20) + `"}`
	for _, tc := range []struct {
		name, body string
		code       int
		msg        string
	}{
		{"malformed", `{"region_id":`, 400, "invalid JSON"},
		{"not an object", `[1,2]`, 400, "invalid JSON"},
		{"unknown field", `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5e","os_type":"u","os_version":"1","color":"red"}`, 400, "unknown field"},
		{"trailing data", createBody + `{}`, 400, "unexpected data"},
		{"missing fields", `{"region_id":"dc1"}`, 400, "target_mac, os_type, os_version"},
		{"bad mac", `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d","os_type":"u","os_version":"1"}`, 400, "not a MAC"},
		{"too large", big, 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var apiErr wire.Error
			if code := e.do(t, "POST", "/api/v1/tasks", tc.body, &apiErr); code != tc.code || !strings.Contains(apiErr.Error, tc.msg) {
				t.Fatalf("got %d %q, want %d containing %q", code, apiErr.Error, tc.code, tc.msg)
			}
		})
	}
	var list ui.TaskList
	e.do(t, "GET", "/api/v1/tasks", "", &list)
	if list.Count != 0 {
		t.Fatalf("bad input wrote %d tasks", list.Count)
	}
	// A second active task for the same MAC (in another spelling): 409.
	if code := e.do(t, "POST", "/api/v1/tasks", createBody, nil); code != 201 {
		t.Fatalf("create: %d", code)
	}
	var apiErr wire.Error
	if code := e.do(t, "POST", "/api/v1/tasks", strings.Replace(createBody, "00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E", 1), &apiErr); code != 409 || !strings.Contains(apiErr.Error, "already has active task") {
		t.Fatalf("duplicate MAC: %d %q", code, apiErr.Error)
	}
	for _, path := range []string{"/api/v1/tasks/00000000-0000-4000-8000-000000000000", "/api/v1/tasks/../../etc"} {
		if code := e.do(t, "GET", path, "", nil); code != 404 {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	if code := e.do(t, "PUT", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/approve", "", nil); code != 404 {
		t.Errorf("approve unknown: %d", code)
	}
	if code := e.do(t, "GET", "/api/v1/tasks?status=bogus", "", nil); code != 400 {
		t.Errorf("bad status filter: %d", code)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	for _, tc := range []struct {
		name, auth string
		code       int
	}{
		{"no token", "", 401},
		{"wrong token", "Bearer " + store.NewSecret(), 401},
		{"basic auth", "Basic YWRtaW46YWRtaW4=", 401},
		{"empty bearer", "Bearer ", 401},
		{"right token", "Bearer " + e.token, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := e.doAuth(t, tc.auth, "POST", "/api/v1/tasks", createBody, nil); code != tc.code {
				t.Fatalf("got %d, want %d", code, tc.code)
			}
		})
	}
	// /health is open and reports the services.
	var rep ui.HealthReport
	if code := e.doAuth(t, "", "GET", "/api/v1/health", "", &rep); code != 200 || rep.Status != "ok" || len(rep.Services) == 0 {
		t.Fatalf("health: %d %+v", code, rep)
	}
}

func TestWatchStreamsChanges(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	var task store.Task
	e.do(t, "POST", "/api/v1/tasks", createBody, &task)
	req, _ := http.NewRequest("GET", e.url+"/api/v1/tasks/"+task.ID+"/watch", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var first ui.WatchLine
	if err := dec.Decode(&first); err != nil || first.Type != "snapshot" {
		t.Fatalf("first line: %+v %v", first, err)
	}
	go func() {
		_, _ = e.store.ClaimTask(context.Background(), task.ID, store.NewSecret())
		_, _ = e.store.Transition(context.Background(), task.ID, wire.StatusCancelled, "test")
	}()
	var seen []string
	for {
		var l ui.WatchLine
		if err := dec.Decode(&l); err != nil {
			break
		}
		if l.Type == "status" {
			seen = append(seen, string(l.Status.Status))
		}
	}
	if fmt.Sprint(seen) != "[ready cancelled]" {
		t.Fatalf("watched statuses %v", seen)
	}
}
