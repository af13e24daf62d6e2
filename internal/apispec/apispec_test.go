package apispec

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

func TestDescriptionIsOpenAPI31(t *testing.T) {
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v", doc["openapi"])
	}
	// Every $ref resolves.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				name, ok1 := strings.CutPrefix(ref, "#/components/schemas/")
				_, ok2 := d.schemas[name]
				if !ok1 && ref != "#/components/responses/Error" || ok1 && !ok2 {
					t.Errorf("%s: unresolved $ref %q", at, ref)
				}
			}
			for k, x := range v {
				walk(x, at+"/"+k)
			}
		case []any:
			for _, x := range v {
				walk(x, at)
			}
		}
	}
	walk(doc, "#")
	if len(d.Operations(ControlPlane)) < 30 || len(d.Operations(Agent)) < 8 {
		t.Errorf("operations: %d control plane, %d agent", len(d.Operations(ControlPlane)), len(d.Operations(Agent)))
	}
}

func TestPathOf(t *testing.T) {
	for in, want := range map[string]string{
		"/api/v1/tasks/{id}":           "/api/v1/tasks/{id}",
		"/boot/*":                      "/boot/{path}",
		"/x/{id:[0-9]+}/y":             "/x/{id}/y",
		"/images/{os}/{version}":       "/images/{os}/{version}",
		"/api/v1/agent/approval/{mac}": "/api/v1/agent/approval/{mac}",
	} {
		if got := PathOf(in); got != want {
			t.Errorf("PathOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCheckRoutesNamesExactlyTheDifference: a router with one route too
// many and one too few is reported line by line.
func TestCheckRoutesNamesExactlyTheDifference(t *testing.T) {
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	ok := func(http.ResponseWriter, *http.Request) {}
	r := chi.NewRouter()
	for op := range d.Operations(Agent) {
		m, p, _ := strings.Cut(op, " ")
		if op == "POST /api/v1/agent/failure" {
			continue // documented, not routed
		}
		if p == "/boot/{path}" {
			r.Handle("/boot/*", http.HandlerFunc(ok))
			continue
		}
		r.MethodFunc(m, p, ok)
	}
	r.Post("/api/v1/agent/reboot/{mac}", ok) // routed, not documented
	err = d.CheckRoutes(r, Agent)
	if err == nil {
		t.Fatal("no difference reported")
	}
	msg := err.Error()
	for _, want := range []string{"1 agent route(s) not in", "  POST /api/v1/agent/reboot/{mac}\n", "1 operation(s) in", "  POST /api/v1/agent/failure\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestValidateResponse(t *testing.T) {
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	const ts = `"2026-12-01T10:00:00Z"`
	task := `{"id":"t1","spec":{"region_id":"dc1","target_mac":"m","os_type":"u","os_version":"1","created_at":` + ts + `},"status":{"status":"ready","updated_at":` + ts + `,"attempt":1},"revision":5}`
	for _, c := range []struct {
		name, method, path string
		status             int
		ct, body, want     string
	}{
		{"task ok", "GET", "/api/v1/tasks/{id}", 200, "application/json", task[:len(task)-1] + `,"events":[]}`, ""},
		{"events missing", "GET", "/api/v1/tasks/{id}", 200, "application/json", task, `required property "events"`},
		{"bad status enum", "POST", "/api/v1/tasks", 201, "application/json", strings.Replace(task, `"ready"`, `"sleeping"`, 1), "not one of"},
		{"bad date", "POST", "/api/v1/tasks", 201, "application/json", strings.Replace(task, ts, `"yesterday"`, 1), "date-time"},
		{"string for integer", "POST", "/api/v1/tasks", 201, "application/json", strings.Replace(task, `"revision":5`, `"revision":"5"`, 1), "$.revision: string, want integer"},
		{"error body", "GET", "/api/v1/tasks/{id}", 404, "application/json", `{"error":"no such task"}`, ""},
		{"error body empty", "GET", "/api/v1/tasks/{id}", 404, "application/json", `{"error":""}`, "shorter"},
		{"undocumented status", "GET", "/api/v1/tasks/{id}", 418, "application/json", `{}`, "418, which is not documented"},
		{"undocumented method", "PATCH", "/api/v1/tasks/{id}", 200, "application/json", `{}`, "not documented"},
		{"not json", "GET", "/api/v1/regions", 200, "text/plain", `[]`, "Content-Type"},
		{"array items", "GET", "/api/v1/regions", 200, "application/json", `[{"id":"dc1"}]`, `$[0]: required property "started_at"`},
		{"map values", "GET", "/api/v1/regions", 200, "application/json", `[{"id":"dc1","started_at":` + ts + `,"services":{"dhcp":1}}]`, "$[0].services.dhcp: integer, want string"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := d.ValidateResponse(c.method, c.path, c.status, c.ct, []byte(c.body))
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}
