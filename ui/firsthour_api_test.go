package ui_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// README's API table: GET /machines/{mac} and GET /cluster/members/{name}
// answer the one object (they were 405), and 404/400 with a JSON error.
func TestGetOneMachineAndMember(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	ctx := context.Background()
	if _, err := e.store.RecordMachine(ctx, "dc1", "52:54:00:15:08:01", &wire.Hardware{BootMode: "uefi"}); err != nil {
		t.Fatal(err)
	}
	var m store.Machine
	if code := e.do(t, "GET", "/api/v1/machines/52-54-00-15-08-01", "", &m); code != 200 || m.MAC != "52:54:00:15:08:01" || m.Hardware == nil || m.Hardware.BootMode != "uefi" {
		t.Fatalf("GET machine: %d %+v", code, m)
	}
	var apiErr wire.Error
	if code := e.do(t, "GET", "/api/v1/machines/52:54:00:15:08:02", "", &apiErr); code != 404 {
		t.Fatalf("GET unknown machine: %d %q", code, apiErr.Error)
	}
	if code := e.do(t, "GET", "/api/v1/machines/nope", "", &apiErr); code != 400 || !strings.Contains(apiErr.Error, "not a MAC") {
		t.Fatalf("GET bad MAC: %d %q", code, apiErr.Error)
	}

	var all store.ClusterStatus
	if code := e.do(t, "GET", "/api/v1/cluster/members", "", &all); code != 200 || len(all.Members) == 0 {
		t.Fatalf("members: %d %+v", code, all)
	}
	want := all.Members[0]
	for _, key := range []string{want.Name, want.ID} {
		var got store.Member
		if code := e.do(t, "GET", "/api/v1/cluster/members/"+key, "", &got); code != 200 || got.ID != want.ID || got.Name != want.Name {
			t.Fatalf("GET member %s: %d %+v", key, code, got)
		}
	}
	if code := e.do(t, "GET", "/api/v1/cluster/members/nobody", "", &apiErr); code != 404 || !strings.Contains(apiErr.Error, `no member "nobody"`) {
		t.Fatalf("GET unknown member: %d %q", code, apiErr.Error)
	}
}

// DELETE /api/v1/tasks/{id}?purge=true deletes an ended task with its
// history (409 naming the status of an active one); plain DELETE still
// cancels and keeps it.
func TestDeleteEndedTask(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	var task store.Task
	if code := e.do(t, "POST", "/api/v1/tasks", createBody, &task); code != 201 {
		t.Fatalf("create: %d", code)
	}
	var apiErr wire.Error
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID+"?purge=true", "", &apiErr); code != 409 || !strings.Contains(apiErr.Error, "is pending") || !strings.Contains(apiErr.Error, "cancel it first") {
		t.Fatalf("purge an active task: %d %q", code, apiErr.Error)
	}
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID, "", nil); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", nil); code != 200 {
		t.Fatalf("a cancelled task is kept: %d", code)
	}
	var deleted store.Task
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID+"?purge=true", "", &deleted); code != 200 || deleted.ID != task.ID || deleted.Status.Status != wire.StatusCancelled {
		t.Fatalf("purge: %d %+v", code, deleted)
	}
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID, "", &apiErr); code != 404 {
		t.Fatalf("GET after purge: %d", code)
	}
	if code := e.do(t, "GET", "/api/v1/tasks/"+task.ID+"/events", "", &apiErr); code != 404 {
		t.Fatalf("events after purge: %d", code)
	}
	if code := e.do(t, "DELETE", "/api/v1/tasks/"+task.ID+"?purge=true", "", &apiErr); code != 404 {
		t.Fatalf("purge again: %d", code)
	}
	if code := e.do(t, "POST", "/api/v1/tasks", createBody, &task); code != 201 {
		t.Fatalf("the MAC is free after the purge: %d", code)
	}
}

// /ws refuses a foreign Origin with the JSON error, and each connection's
// snapshot carries the time it was sent (it was cached: two connections
// seconds apart got the same server_time).
func TestWSOriginErrorAndFreshServerTime(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	hdr := http.Header{
		"Authorization":         {"Bearer " + e.token},
		"Origin":                {"http://evil.example"},
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
	resp, body := e.request(t, "GET", "/ws", "", hdr)
	var apiErr wire.Error
	if resp.StatusCode != 403 || json.Unmarshal([]byte(body), &apiErr) != nil || !strings.Contains(apiErr.Error, `origin "http://evil.example" refused`) {
		t.Fatalf("foreign origin: %d %q (want 403 with a JSON error)", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("foreign origin: Content-Type %q", ct)
	}

	ctx := context.Background()
	serverTime := func() time.Time {
		c := e.dialWS(t, ctx)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, data, err := c.Read(rctx)
		if err != nil {
			t.Fatal(err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		var snap struct {
			Type       string    `json:"type"`
			ServerTime time.Time `json:"server_time"`
			Tasks      []any     `json:"tasks"`
		}
		if err := json.Unmarshal(data, &snap); err != nil || snap.Type != "snapshot" || snap.Tasks == nil {
			t.Fatalf("first message %s: %v", data, err)
		}
		return snap.ServerTime
	}
	before := time.Now()
	t1 := serverTime()
	time.Sleep(1100 * time.Millisecond) // nothing changes in between: the same cached snapshot
	t2 := serverTime()
	if t1.Before(before.Add(-time.Second)) || t2.Sub(t1) < time.Second || time.Since(t2) > 5*time.Second {
		t.Fatalf("server_time %s then %s (1.1 s apart, test started %s): not the time of sending", t1, t2, before)
	}
}
