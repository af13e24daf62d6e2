package ui_test

import (
	"context"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// seedCreatable makes the test cluster accept the tasks the tests create:
// region dc1 is known (as if a region had registered) and the catalog has
// ubuntu 22.04.
func seedCreatable(t testing.TB, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	if err := st.RememberRegion(ctx, "dc1"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(ctx, store.Image{OSType: "ubuntu", OSVersion: "22.04", Source: "/srv/ubuntu.img", Format: "raw",
		SHA256: strings.Repeat("ab", 32), Size: 1 << 30, FileSize: 1 << 30}); err != nil {
		t.Fatal(err)
	}
}

// unseedImage empties the catalog seedCreatable filled.
func unseedImage(t testing.TB, e *apiEnv) {
	t.Helper()
	if _, err := e.store.DeleteImage(context.Background(), "ubuntu", "22.04"); err != nil {
		t.Fatal(err)
	}
}

// POST /api/v1/tasks refuses what could never run, with a status and a
// reason, and writes nothing.
func TestCreateRefusesWhatCannotRun(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := e.store.RegisterRegion(ctx, store.Region{ID: "dc2"}, 30); err != nil { // live, as a running region is
		t.Fatal(err)
	}
	body := func(region, mac, os, ver, extra string) string {
		return `{"region_id":"` + region + `","target_mac":"` + mac + `","os_type":"` + os + `","os_version":"` + ver + `"` + extra + `}`
	}
	for _, tc := range []struct {
		name, body string
		code       int
		msg        []string
	}{
		{"unknown region", body("mars", "52:54:00:15:04:01", "ubuntu", "22.04", ""), 422,
			[]string{`region "mars" is unknown`, "known: dc1, dc2", "--region-id mars"}},
		{"no image", body("dc1", "52:54:00:15:04:02", "ubuntu", "99.04", ""), 422,
			[]string{"no image for ubuntu 99.04", "have: ubuntu 22.04", "lpmos image add ubuntu 99.04", "allow_missing_image"}},
		{"multicast MAC", body("dc1", "01:00:5e:00:00:01", "ubuntu", "22.04", ""), 400, []string{"01:00:5e:00:00:01 is a multicast"}},
		{"broadcast MAC", body("dc1", "ff:ff:ff:ff:ff:ff", "ubuntu", "22.04", ""), 400, []string{"multicast/broadcast"}},
		{"all-zero MAC", body("dc1", "00-00-00-00-00-00", "ubuntu", "22.04", ""), 400, []string{"00:00:00:00:00:00 is all zeros"}},
		{"bad field still 400 first", body("mars", "52:54:00:15:04:03", "ubuntu", "22.04", `,"hostname":"a b"`), 400, []string{"hostname"}},
		{"unknown region even with allow_missing_image", body("mars", "52:54:00:15:04:04", "ubuntu", "99.04", `,"allow_missing_image":true`), 422, []string{`region "mars"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var apiErr wire.Error
			code := e.do(t, "POST", "/api/v1/tasks", tc.body, &apiErr)
			if code != tc.code {
				t.Fatalf("status %d (%q), want %d", code, apiErr.Error, tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(apiErr.Error, m) {
					t.Errorf("error %q lacks %q", apiErr.Error, m)
				}
			}
		})
	}
	tasks, _, err := e.store.ListTasks(context.Background(), store.Filter{})
	if err != nil || len(tasks) != 0 {
		t.Fatalf("refused creates wrote %d tasks (%v)", len(tasks), err)
	}
	// What is accepted: a live region, a known one, and a missing image
	// when asked for explicitly.
	for _, b := range []string{
		body("dc2", "52:54:00:15:04:10", "ubuntu", "22.04", ""),
		body("dc1", "52:54:00:15:04:11", "ubuntu", "22.04", ""),
		body("dc1", "02:00:00:15:04:12", "ubuntu", "99.04", `,"allow_missing_image":true`), // locally administered unicast
	} {
		var task store.Task
		if code := e.do(t, "POST", "/api/v1/tasks", b, &task); code != 201 {
			t.Fatalf("create %s: %d", b, code)
		}
	}
}
