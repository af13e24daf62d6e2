package agentapi

import (
	"io"
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/internal/apispec"
)

// TestOpenAPICoversEveryAgentRoute: every chi route of the agent API is in
// the OpenAPI description (x-lpmos-listener: agent) and every documented
// agent operation is routed; /healthz answers as documented.
func TestOpenAPICoversEveryAgentRoute(t *testing.T) {
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
