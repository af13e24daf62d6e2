package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// lockedBuffer is a log sink several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// call sends a request and returns the status and raw answer.
func (e *liveEnv) call(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestBMCCredentialsNeverLeak creates tasks with a distinctive BMC password
// and looks for it in every API answer, every /ws message, every log line
// and every key and value of etcd (a real range over all keys).
func TestBMCCredentialsNeverLeak(t *testing.T) {
	t.Parallel()
	const pw = "Zq7-pw-LEAK-canary" // 18 chars: fits IPMI's 20
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := storetest.Config(t, t.TempDir())
	cfg.Logger = log
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	tok, _, err := st.EnsureAdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seedCreatable(t, st)
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	e := serveLive(t, st, tok, ui.Config{Store: st, Health: reg, Version: "test", Logger: log})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var seen bytes.Buffer // everything the API and /ws answered
	ws := e.dialWS(t, ctx)
	readRaw := func() []byte {
		t.Helper()
		rctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		_, data, err := ws.Read(rctx)
		if err != nil {
			t.Fatalf("read /ws: %v", err)
		}
		seen.Write(data)
		return data
	}
	readRaw() // snapshot

	body := `{"region_id":"dc1","target_mac":"52:54:00:00:13:01","os_type":"ubuntu","os_version":"22.04",
		"bmc":{"protocol":"ipmi","address":"127.0.0.1:6230","username":"admin","password":"` + pw + `"}}`
	code, data := e.call(t, "POST", "/api/v1/tasks", body)
	seen.Write(data)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, data)
	}
	var task store.Task
	if err := json.Unmarshal(data, &task); err != nil {
		t.Fatal(err)
	}
	if task.BMC == nil || !task.BMC.PasswordSet || task.BMC.Username != "admin" || task.BMC.Address != "127.0.0.1:6230" {
		t.Fatalf("create answered bmc %+v, want the BMC with password_set", task.BMC)
	}
	id := task.ID
	// The region reads it back opened (the only way out of the store).
	if b, err := st.TaskBMC(ctx, id); err != nil || b.Password != pw {
		t.Fatalf("TaskBMC: %v (password opened: %v)", err, b.Password == pw)
	}

	// The power API: unknown until polled, actions queued for the region.
	code, data = e.call(t, "GET", "/api/v1/tasks/"+id+"/power", "")
	seen.Write(data)
	if code != http.StatusOK || !strings.Contains(string(data), `"state":"unknown"`) {
		t.Fatalf("GET power: %d %s", code, data)
	}
	code, data = e.call(t, "POST", "/api/v1/tasks/"+id+"/power", `{"action":"cycle"}`)
	seen.Write(data)
	if code != http.StatusAccepted || !strings.Contains(string(data), `"region_id":"dc1"`) {
		t.Fatalf("POST power: %d %s", code, data)
	}
	reqs, _, err := st.PowerRequests(ctx, "dc1")
	if err != nil || len(reqs) != 1 || reqs[0].Action != "cycle" || reqs[0].TaskID != id {
		t.Fatalf("queued requests %+v, %v; want one cycle of %s", reqs, err, id)
	}

	// Replace the BMC (PUT) with Redfish and the same password.
	code, data = e.call(t, "PUT", "/api/v1/tasks/"+id+"/bmc",
		`{"protocol":"redfish","address":"https://10.0.0.9","username":"root","password":"`+pw+`","system_id":"System.Embedded.1","insecure_skip_verify":true}`)
	seen.Write(data)
	if code != http.StatusOK || !strings.Contains(string(data), `"password_set":true`) {
		t.Fatalf("PUT bmc: %d %s", code, data)
	}
	// /ws: the bmc message, and a power state message.
	if err := st.SetPowerState(ctx, id, store.PowerState{State: store.PowerOn, CheckedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	var sawBMC, sawPower bool
	for i := 0; i < 50 && !(sawBMC && sawPower); i++ {
		var m struct {
			Type   string            `json:"type"`
			TaskID string            `json:"task_id"`
			BMC    *store.BMCInfo    `json:"bmc"`
			Power  *store.PowerState `json:"power"`
		}
		if err := json.Unmarshal(readRaw(), &m); err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Type == ui.MsgBMC && m.TaskID == id && m.BMC != nil && m.BMC.Protocol == "redfish":
			sawBMC = true
		case m.Type == ui.MsgPower && m.TaskID == id && m.Power != nil && m.Power.State == "on":
			sawPower = true
		}
	}
	if !sawBMC || !sawPower {
		t.Fatalf("/ws: bmc message %v, power message %v; want both", sawBMC, sawPower)
	}
	code, data = e.call(t, "GET", "/api/v1/tasks/"+id+"/power", "")
	seen.Write(data)
	if code != http.StatusOK || !strings.Contains(string(data), `"state":"on"`) {
		t.Fatalf("GET power after the poll: %d %s", code, data)
	}
	for _, path := range []string{"/api/v1/tasks/" + id, "/api/v1/tasks", "/api/v1/tasks/" + id + "/events"} {
		code, data = e.call(t, "GET", path, "")
		seen.Write(data)
		if code != http.StatusOK || !strings.Contains(string(data), `"password_set":true`) && path != "/api/v1/tasks/"+id+"/events" {
			t.Fatalf("GET %s: %d %s", path, code, data)
		}
	}
	// A new /ws client's snapshot carries the BMC, redacted.
	ws2 := e.dialWS(t, ctx)
	_, snap, err := ws2.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen.Write(snap)
	if !strings.Contains(string(snap), `"password_set":true`) {
		t.Fatalf("snapshot lacks the task's BMC: %.300s", snap)
	}
	ws2.Close(websocket.StatusNormalClosure, "")

	if strings.Contains(seen.String(), pw) {
		t.Fatalf("the BMC password appears in an API answer or /ws message")
	}
	if strings.Contains(logs.String(), pw) {
		t.Fatalf("the BMC password appears in the logs")
	}
	if !strings.Contains(logs.String(), "task BMC set") {
		t.Fatalf("the log capture missed the server's lines: %.500s", logs.String())
	}
	all, err := st.Client().Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	sealed := 0
	for _, kv := range all.Kvs {
		if bytes.Contains(kv.Key, []byte(pw)) || bytes.Contains(kv.Value, []byte(pw)) {
			t.Fatalf("etcd key %s holds the BMC password in the clear", kv.Key)
		}
		if strings.HasSuffix(string(kv.Key), "/bmc") && bytes.Contains(kv.Value, []byte("password_sealed")) {
			sealed++
		}
	}
	if sealed != 1 || len(all.Kvs) < 10 {
		t.Fatalf("scanned %d etcd keys, %d sealed BMC records; want the task's record sealed", len(all.Kvs), sealed)
	}
}

// errOf is the error text of a JSON error answer.
func errOf(data []byte) string {
	var e struct{ Error string }
	_ = json.Unmarshal(data, &e)
	return e.Error
}

func TestBMCBadInput(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	base := `"region_id":"dc1","target_mac":"52:54:00:00:13:02","os_type":"ubuntu","os_version":"22.04"`
	tests := []struct {
		name, bmc, want string
	}{
		{"no protocol", `{"address":"10.0.0.1","username":"a","password":"b"}`, "bmc.protocol: missing"},
		{"bad protocol", `{"protocol":"amt","address":"10.0.0.1","username":"a","password":"b"}`, `bmc.protocol: "amt": use ipmi or redfish`},
		{"no address", `{"protocol":"ipmi","username":"a","password":"b"}`, "bmc.address: missing"},
		{"bad port", `{"protocol":"ipmi","address":"10.0.0.1:99999","username":"a","password":"b"}`, `bmc.address: "10.0.0.1:99999": port "99999"`},
		{"ipmi URL", `{"protocol":"ipmi","address":"https://10.0.0.1","username":"a","password":"b"}`, "bmc.address"},
		{"no username", `{"protocol":"ipmi","address":"10.0.0.1","password":"b"}`, "bmc.username: missing"},
		{"no password", `{"protocol":"ipmi","address":"10.0.0.1","username":"a"}`, "bmc.password: missing"},
		{"long ipmi password", `{"protocol":"ipmi","address":"10.0.0.1","username":"a","password":"123456789012345678901"}`, "bmc.password: IPMI passwords are at most 20"},
		{"ipmi system id", `{"protocol":"ipmi","address":"10.0.0.1","username":"a","password":"b","system_id":"1"}`, "bmc.system_id: only for redfish"},
		{"redfish URL with path", `{"protocol":"redfish","address":"https://10.0.0.1/redfish/v1/Systems/1","username":"a","password":"b"}`, "bmc.address"},
		{"unknown field", `{"protocol":"ipmi","address":"10.0.0.1","username":"a","password":"b","pass":"x"}`, "pass"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.call(t, "POST", "/api/v1/tasks", "{"+base+`,"bmc":`+tc.bmc+"}")
			if code != http.StatusBadRequest || !strings.Contains(errOf(data), tc.want) {
				t.Fatalf("create: %d %s, want 400 with %q", code, data, tc.want)
			}
		})
	}
	// Nothing was written: the MAC is free for a task without a BMC, which
	// has no power control.
	code, data := e.call(t, "POST", "/api/v1/tasks", "{"+base+"}")
	if code != http.StatusCreated {
		t.Fatalf("create without bmc: %d %s", code, data)
	}
	var task store.Task
	_ = json.Unmarshal(data, &task)
	if task.BMC != nil || strings.Contains(string(data), `"bmc"`) {
		t.Fatalf("a task without a BMC answered %s", data)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/power", ""},
		{"POST", "/power", `{"action":"on"}`},
	} {
		code, data := e.call(t, c.method, "/api/v1/tasks/"+task.ID+c.path, c.body)
		if code != http.StatusConflict || !strings.Contains(string(data), "has no BMC") {
			t.Fatalf("%s %s without a BMC: %d %s, want 409 naming it", c.method, c.path, code, data)
		}
	}
	code, data = e.call(t, "PUT", "/api/v1/tasks/"+task.ID+"/bmc", `{"protocol":"ipmi","address":"10.0.0.1","username":"a","password":"b"}`)
	if code != http.StatusOK {
		t.Fatalf("PUT bmc: %d %s", code, data)
	}
	for body, want := range map[string]string{`{"action":"reboot"}`: `action "reboot": use one of on, off, cycle, pxe, disk`, `{}`: "action: missing"} {
		code, data = e.call(t, "POST", "/api/v1/tasks/"+task.ID+"/power", body)
		if code != http.StatusBadRequest || !strings.Contains(errOf(data), want) {
			t.Fatalf("POST power %s: %d %s, want 400 with %q", body, code, data, want)
		}
	}
	code, _ = e.call(t, "DELETE", "/api/v1/tasks/"+task.ID+"/bmc", "")
	if code != http.StatusNoContent {
		t.Fatalf("DELETE bmc: %d", code)
	}
	if code, _ = e.call(t, "GET", "/api/v1/tasks/"+task.ID+"/power", ""); code != http.StatusConflict {
		t.Fatalf("GET power after the BMC was removed: %d, want 409", code)
	}
	if code, _ = e.call(t, "PUT", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/bmc", `{"protocol":"ipmi","address":"10.0.0.1","username":"a","password":"b"}`); code != http.StatusNotFound {
		t.Fatalf("PUT bmc of an unknown task: %d, want 404", code)
	}
}

// A discovered machine's BMC is taken by the next task for its MAC.
func TestMachineBMCGoesToItsTask(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	const mac = "52:54:00:00:13:30"
	bmc := `{"protocol":"redfish","address":"https://10.0.0.30","username":"root","password":"machine-pw-7","system_id":"1"}`
	if code, data := e.call(t, "PUT", "/api/v1/machines/"+mac+"/bmc", bmc); code != http.StatusNotFound || !strings.Contains(errOf(data), "no discovered machine") {
		t.Fatalf("PUT BMC of an unknown machine: %d %s", code, data)
	}
	if _, err := e.store.RecordMachine(context.Background(), "dc1", mac, nil); err != nil {
		t.Fatal(err)
	}
	if code, data := e.call(t, "PUT", "/api/v1/machines/"+mac+"/bmc", `{"protocol":"redfish","address":"https://10.0.0.30","username":"root"}`); code != http.StatusBadRequest || !strings.Contains(errOf(data), "bmc.password: missing") {
		t.Fatalf("PUT a BMC without password: %d %s", code, data)
	}
	code, data := e.call(t, "PUT", "/api/v1/machines/"+mac+"/bmc", bmc)
	if code != http.StatusOK || strings.Contains(string(data), "machine-pw-7") || !strings.Contains(string(data), `"password_set":true`) {
		t.Fatalf("PUT machine BMC: %d %s", code, data)
	}
	if code, data = e.call(t, "GET", "/api/v1/machines/"+mac+"/bmc", ""); code != http.StatusOK || !strings.Contains(string(data), `"system_id":"1"`) || strings.Contains(string(data), "machine-pw-7") {
		t.Fatalf("GET machine BMC: %d %s", code, data)
	}
	code, data = e.call(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"`+mac+`","os_type":"ubuntu","os_version":"22.04"}`)
	if code != http.StatusCreated || !strings.Contains(string(data), `"address":"https://10.0.0.30"`) || strings.Contains(string(data), "machine-pw-7") {
		t.Fatalf("create for the machine: %d %s", code, data)
	}
	var task store.Task
	_ = json.Unmarshal(data, &task)
	b, err := e.store.TaskBMC(context.Background(), task.ID)
	if err != nil || b.Password != "machine-pw-7" || b.SystemID != "1" {
		t.Fatalf("the task's BMC: %v (password carried: %v)", err, b.Password == "machine-pw-7")
	}
	code, data = e.call(t, "GET", "/api/v1/tasks/"+task.ID+"/events", "")
	if code != http.StatusOK || !strings.Contains(string(data), "BMC taken from the discovered machine "+mac) {
		t.Fatalf("events: %d %s", code, data)
	}
	if code, _ = e.call(t, "DELETE", "/api/v1/machines/"+mac+"/bmc", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE machine BMC: %d", code)
	}
	if code, _ = e.call(t, "GET", "/api/v1/machines/"+mac+"/bmc", ""); code != http.StatusNotFound {
		t.Fatalf("GET removed machine BMC: %d", code)
	}
}

// GET /api/v1/tasks/{id}/watch (lpmos task watch) carries the power state
// and BMC changes, the BMC without its password.
func TestWatchStreamsPower(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	code, data := e.call(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"52:54:00:00:13:50","os_type":"ubuntu","os_version":"22.04",
		"bmc":{"protocol":"ipmi","address":"10.0.0.50","username":"admin","password":"watch-pw-1"}}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, data)
	}
	var task store.Task
	_ = json.Unmarshal(data, &task)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/tasks/"+task.ID+"/watch", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var first ui.WatchLine
	if err := dec.Decode(&first); err != nil || first.Type != "snapshot" || first.Task == nil || first.Task.BMC == nil {
		t.Fatalf("first line %+v, %v", first, err)
	}
	if _, err := e.store.SetTaskBMC(ctx, task.ID, &store.BMCInput{Protocol: "ipmi", Address: "10.0.0.51", Username: "admin", Password: "watch-pw-2"}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetPowerState(ctx, task.ID, store.PowerState{State: "off", CheckedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	var sawBMC, sawPower bool
	for !(sawBMC && sawPower) {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("watch: %v (bmc %v, power %v)", err, sawBMC, sawPower)
		}
		if strings.Contains(string(raw), "watch-pw") {
			t.Fatalf("watch line holds the password: %s", raw)
		}
		var l ui.WatchLine
		_ = json.Unmarshal(raw, &l)
		sawBMC = sawBMC || l.Type == "bmc" && l.BMC != nil && l.BMC.Address == "10.0.0.51" && l.BMC.PasswordSet
		sawPower = sawPower || l.Type == "power" && l.Power != nil && l.Power.State == "off"
	}
}
