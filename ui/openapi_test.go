package ui_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/internal/apispec"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// TestOpenAPICoversEveryControlPlaneRoute: every chi route of the control
// plane is in the OpenAPI description and every documented control-plane
// operation is routed. The failure lists exactly the differences.
func TestOpenAPICoversEveryControlPlaneRoute(t *testing.T) {
	t.Parallel()
	d, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ui.New(ui.Config{Store: storetest.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	routes, ok := srv.Handler().(chi.Routes)
	if !ok {
		t.Fatalf("the control plane handler is a %T, not a chi router", srv.Handler())
	}
	if err := d.CheckRoutes(routes, apispec.ControlPlane); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAPIValidatesRealResponses sends real requests to a control
// plane and validates each answer (status and JSON body) against the
// description.
func TestOpenAPIValidatesRealResponses(t *testing.T) {
	t.Parallel()
	d, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.New(t)
	tok, _, err := st.EnsureAdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Task creation needs a registered region and a catalog image.
	if err := st.RememberRegion(context.Background(), "dc1"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(context.Background(), store.Image{OSType: "ubuntu", OSVersion: "22.04", Source: "/srv/ubuntu.img", Format: "raw",
		SHA256: strings.Repeat("ab", 32), Size: 1 << 30, FileSize: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	srv, err := ui.New(ui.Config{Store: st, Health: reg, Version: "test", Images: imagesrc.Policy{Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	task, err := st.CreateTask(context.Background(), store.Spec{RegionID: "dc1", TargetMAC: "00:1a:2b:3c:4d:5f", OSType: "ubuntu", OSVersion: "22.04", Hostname: "db-1"})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := st.CreateTask(context.Background(), store.Spec{RegionID: "dc1", TargetMAC: "00:1a:2b:3c:4d:60", OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, url, path, auth, body string
		want                          int
	}{
		{"GET", "/api/v1/health", "/api/v1/health", "", "", 200},
		{"GET", "/api/v1/openapi.json", "/api/v1/openapi.json", "", "", 200},
		{"GET", "/api/v1/cluster/ca", "/api/v1/cluster/ca", "", "", 200},
		{"POST", "/api/v1/tasks", "/api/v1/tasks", tok, `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5e","os_type":"ubuntu","os_version":"22.04","hostname":"web-1"}`, 201},
		{"POST", "/api/v1/tasks", "/api/v1/tasks", tok, `{"region_id":"dc1","target_mac":"zz","os_type":"ubuntu","os_version":"22.04"}`, 400},
		{"POST", "/api/v1/tasks", "/api/v1/tasks", tok, `{"region_id":"dc1","target_mac":"00:1a:2b:3c:4d:5f","os_type":"ubuntu","os_version":"22.04"}`, 409},
		{"GET", "/api/v1/tasks", "/api/v1/tasks", tok, "", 200},
		{"GET", "/api/v1/tasks?status=bogus", "/api/v1/tasks", tok, "", 400},
		{"GET", "/api/v1/tasks", "/api/v1/tasks", "", "", 401},
		{"GET", "/api/v1/tasks/" + task.ID, "/api/v1/tasks/{id}", tok, "", 200},
		{"GET", "/api/v1/tasks/no-such-task", "/api/v1/tasks/{id}", tok, "", 404},
		{"GET", "/api/v1/tasks/" + task.ID + "/events", "/api/v1/tasks/{id}/events", tok, "", 200},
		{"PUT", "/api/v1/tasks/" + task.ID + "/approve", "/api/v1/tasks/{id}/approve", tok, "", 409},
		{"DELETE", "/api/v1/tasks/" + cancelled.ID, "/api/v1/tasks/{id}", tok, "", 200},
		{"POST", "/api/v1/tasks/" + cancelled.ID + "/retry", "/api/v1/tasks/{id}/retry", tok, "", 200},
		{"GET", "/api/v1/regions", "/api/v1/regions", tok, "", 200},
		{"GET", "/api/v1/machines", "/api/v1/machines", tok, "", 200},
		{"GET", "/api/v1/images", "/api/v1/images", tok, "", 200},
		{"DELETE", "/api/v1/images/none/1", "/api/v1/images/{os}/{version}", tok, "", 404},
	} {
		req, err := http.NewRequest(c.method, hs.URL+c.url, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if c.auth != "" {
			req.Header.Set("Authorization", "Bearer "+c.auth)
		}
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.url, resp.StatusCode, c.want, body)
			continue
		}
		if err := d.ValidateResponse(c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body); err != nil {
			t.Errorf("%v\n%s", err, body)
		}
		if c.url == "/api/v1/openapi.json" && !bytes.Equal(body, apispec.JSON()) {
			t.Errorf("/api/v1/openapi.json is not the embedded description")
		}
	}
}
