package agentapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/apispec"
)

// TestOpenAPICoversEveryAgentRoute: every chi route of the agent API is in
// the OpenAPI description (x-lpmos-listener: agent) and every documented
// agent operation is routed; /healthz answers as documented.
func TestOpenAPICoversEveryAgentRoute(t *testing.T) {
	t.Parallel()
	d, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	r := newRegion(t, newStore(t), "dc1", nil)
	routes, ok := r.routes(nil).(chi.Routes)
	if !ok {
		t.Fatalf("the agent API handler is not a chi router")
	}
	if err := d.CheckRoutes(routes, apispec.Agent); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(r.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := d.ValidateResponse("GET", "/healthz", resp.StatusCode, resp.Header.Get("Content-Type"), body); err != nil {
		t.Errorf("%v\n%s", err, body)
	}

	// A booting machine: script, session exchange (once), approval poll.
	r.start(t)
	task := createTask(t, r.st, "dc1")
	advance(t, r, task.ID, wire.StatusReady)
	boot := bootToken(t, r, task.Spec.TargetMAC)
	body, _ = json.Marshal(wire.SessionRequest{MACAddress: task.Spec.TargetMAC, TaskID: task.ID})
	var session string
	for i, want := range []int{200, 401} {
		req, _ := http.NewRequest("POST", r.srv.URL+wire.PathSession, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+boot)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want && !(i == 1 && resp.StatusCode >= 400) {
			t.Fatalf("session exchange %d: %d %s", i, resp.StatusCode, got)
		}
		if err := d.ValidateResponse("POST", "/api/v1/agent/session", resp.StatusCode, resp.Header.Get("Content-Type"), got); err != nil {
			t.Errorf("%v\n%s", err, got)
		}
		if i == 0 {
			var sr wire.SessionResponse
			_ = json.Unmarshal(got, &sr)
			session = sr.SessionToken
		}
	}
	code, got := getAuth(t, r.srv.URL+wire.PathApproval+task.Spec.TargetMAC, session)
	if err := d.ValidateResponse("GET", "/api/v1/agent/approval/{mac}", code, "application/json", []byte(got)); err != nil || code != 200 {
		t.Errorf("approval poll: %d %v\n%s", code, err, got)
	}

	resp, err = http.Post(r.srv.URL+"/api/v1/agent/progress", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := d.ValidateResponse("POST", "/api/v1/agent/progress", resp.StatusCode, resp.Header.Get("Content-Type"), body); err != nil || resp.StatusCode < 400 {
		t.Errorf("progress without a session: %d %v\n%s", resp.StatusCode, err, body)
	}
}
