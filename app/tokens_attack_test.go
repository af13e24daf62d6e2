package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// agentCall does one request on the agent port with an optional bearer
// token and JSON body; it returns the status and the body.
func agentCall(t *testing.T, method, url, token string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// wantStatus fails unless code is want and an error answer is JSON
// {"error": ...} containing every one of msgs.
func wantStatus(t *testing.T, what string, code int, body string, want int, msgs ...string) {
	t.Helper()
	if code != want {
		t.Fatalf("%s: HTTP %d, want %d: %s", what, code, want, body)
	}
	if want < 400 {
		return
	}
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("%s: error answer is not JSON {\"error\": ...}: %q", what, body)
	}
	for _, m := range msgs {
		if !strings.Contains(e.Error, m) {
			t.Errorf("%s: error %q lacks %q", what, e.Error, m)
		}
	}
}

// TestAgentCredentialAttacks replays, against a real `lpmos serve`, what an
// attacker on the provisioning network did with the agent token the iPXE
// script used to hand out: reuse it, read user_data before approval, jump
// an approved task to completed, wedge it with a huge seq, and download
// images without a token. Each is refused now.
func TestAgentCredentialAttacks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir)
	p.waitHealthy(t, 30*time.Second)
	api := fmt.Sprintf("http://127.0.0.1:%d", p.ports[1])
	admin := p.token(t)

	img := filepath.Join(dir, "images", "ubuntu.img") // <data-dir>/images, the default --images-dir
	if err := os.MkdirAll(filepath.Dir(img), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, []byte(strings.Repeat("lpmos image\n", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.cli(t, "image", "add", "ubuntu", "22.04", img); err != nil {
		t.Fatalf("image add: %v", err)
	}
	const mac = "52:54:00:a7:7a:01"
	const secret = "chpasswd-hunter2"
	out, err := p.cli(t, "task", "create", "--mac", mac, "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image", "--user-data", "#cloud-config\n# "+secret+"\n", "-o", "json")
	if err != nil {
		t.Fatalf("task create: %v", err)
	}
	var task struct{ ID string }
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatal(err)
	}
	events := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", p.url+"/api/v1/tasks/"+task.ID+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return string(data)
	}
	bootRE := regexp.MustCompile(`lpmos_token=([A-Za-z0-9_-]+)`)
	script := func() string {
		t.Helper()
		code, body := agentCall(t, "GET", api+"/boot/"+mac+".ipxe", "", nil)
		m := bootRE.FindStringSubmatch(body)
		if code != 200 || m == nil {
			t.Fatalf("boot script %d:\n%s", code, body)
		}
		return m[1]
	}
	session := map[string]string{"mac_address": mac, "task_id": task.ID}

	// The machine boots: its agent exchanges the script's boot token.
	boot := script()
	code, body := agentCall(t, "POST", api+"/api/v1/agent/session", boot, session)
	wantStatus(t, "exchange", code, body, 200)
	var sr struct {
		SessionToken string `json:"session_token"`
		Status       string `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &sr); err != nil || sr.SessionToken == "" {
		t.Fatalf("session answer %q", body)
	}
	machine := sr.SessionToken

	// 1. The boot token cannot be reused: 401, and the task's events name
	// the address that tried.
	code, body = agentCall(t, "POST", api+"/api/v1/agent/session", boot, session)
	wantStatus(t, "second exchange of the boot token", code, body, http.StatusUnauthorized, "already redeemed")
	if ev := events(); !strings.Contains(ev, "boot token replayed from 127.0.0.1:") {
		t.Errorf("no replay event: %s", ev)
	}
	// The boot token opens nothing else either.
	code, body = agentCall(t, "GET", api+"/api/v1/agent/approval/"+mac, boot, nil)
	wantStatus(t, "approval with the boot token", code, body, http.StatusUnauthorized, "boot token")

	// 2. Re-fetching the script gives a new boot token; redeeming it (a
	// stolen script) revokes the machine's session, visibly.
	thief := script()
	code, body = agentCall(t, "POST", api+"/api/v1/agent/session", thief, session)
	wantStatus(t, "exchange of a re-fetched script", code, body, 200)
	_ = json.Unmarshal([]byte(body), &sr)
	stolen := sr.SessionToken
	code, body = agentCall(t, "GET", api+"/api/v1/agent/approval/"+mac, machine, nil)
	wantStatus(t, "the raced session", code, body, http.StatusUnauthorized, "revoked")
	// The event names the address that redeemed the stolen script.
	if ev := events(); !strings.Contains(ev, "boot token redeemed by 127.0.0.1:") || !strings.Contains(ev, "previous session") || !strings.Contains(ev, "revoked") {
		t.Errorf("no revocation event naming the redeeming address: %s", ev)
	}

	// 3. user_data is not readable before approval, nor is the image.
	code, body = agentCall(t, "POST", api+"/api/v1/agent/hardware", stolen, map[string]any{"mac_address": mac, "task_id": task.ID, "hardware": map[string]any{"boot_mode": "bios"}})
	wantStatus(t, "hardware", code, body, 200)
	code, body = agentCall(t, "GET", api+"/api/v1/agent/approval/"+mac+"?wait=0s", stolen, nil)
	wantStatus(t, "approval before approve", code, body, 200)
	if strings.Contains(body, secret) || strings.Contains(body, "user_data") {
		t.Fatalf("user_data before approval: %s", body)
	}
	code, body = agentCall(t, "GET", api+"/images/ubuntu/22.04", "", nil)
	wantStatus(t, "image without a session", code, body, http.StatusUnauthorized, "session")
	code, body = agentCall(t, "GET", api+"/images/ubuntu/22.04", stolen, nil)
	wantStatus(t, "image before approval", code, body, http.StatusForbidden, "approved")

	// 4. Approved: the stage jump and the huge seq are refused.
	if _, err := p.cli(t, "task", "approve", task.ID); err != nil {
		t.Fatalf("approve: %v", err)
	}
	code, body = agentCall(t, "POST", api+"/api/v1/agent/progress", stolen, map[string]any{"task_id": task.ID, "seq": time.Now().UnixMicro(), "stage": "completed", "percentage": 100})
	wantStatus(t, "stage jump to completed", code, body, http.StatusConflict, "expected stage partitioning")
	code, body = agentCall(t, "POST", api+"/api/v1/agent/progress", stolen, map[string]any{"task_id": task.ID, "seq": int64(9223372036854775807), "stage": "partitioning", "percentage": 1})
	wantStatus(t, "huge seq", code, body, http.StatusBadRequest, "server clock")
	out, err = p.cli(t, "task", "get", task.ID, "-o", "json")
	if err != nil || !strings.Contains(out, `"status": "approved"`) {
		t.Fatalf("task after the refused reports: %v\n%s", err, out)
	}
	// A real report still works, and the install spec (with user_data)
	// goes to the current session only.
	code, body = agentCall(t, "POST", api+"/api/v1/agent/progress", stolen, map[string]any{"task_id": task.ID, "seq": time.Now().UnixMicro(), "stage": "partitioning", "percentage": 5})
	wantStatus(t, "a real report", code, body, 200)
	code, body = agentCall(t, "GET", api+"/api/v1/agent/approval/"+mac, stolen, nil)
	wantStatus(t, "approval after approve", code, body, 200)
	if !strings.Contains(body, secret) {
		t.Errorf("approved: no user_data in %s", body)
	}
	code, body = agentCall(t, "GET", api+"/api/v1/agent/approval/"+mac, machine, nil)
	wantStatus(t, "approval with the revoked session", code, body, http.StatusUnauthorized, "revoked")
	if strings.Contains(body, secret) {
		t.Fatal("user_data leaked to a revoked session")
	}
}
