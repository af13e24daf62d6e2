package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

// TestSessionTokens: the boot token goes only to the exchange, the session
// token (SetToken) to every later call and to image requests on the API's
// host through AuthTransport, never to another host; the server's Date
// header sets ServerNow.
func TestSessionTokens(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // path -> Authorization
	serverTime := time.Now().Add(3 * time.Hour).UTC()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		w.Header().Set("Date", serverTime.Format(http.TimeFormat))
		switch r.URL.Path {
		case wire.PathSession:
			_ = json.NewEncoder(w).Encode(wire.SessionResponse{SessionToken: "s_sess", TaskID: "t1", Status: wire.StatusReady})
		default:
			_ = json.NewEncoder(w).Encode(wire.HardwareResponse{TaskID: "t1"})
		}
	}))
	defer api.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen["other"] = r.Header.Get("Authorization")
		mu.Unlock()
	}))
	defer other.Close()

	var logs bytes.Buffer
	c := newClient(api.URL, "", &logs)
	ctx := context.Background()
	s, err := c.Session(ctx, "b_boot", wire.SessionRequest{MACAddress: "52:54:00:00:00:01", TaskID: "t1"})
	if err != nil || s.SessionToken != "s_sess" {
		t.Fatalf("Session: %+v %v", s, err)
	}
	if off := time.Until(c.ServerNow()); off < 2*time.Hour || off > 4*time.Hour {
		t.Errorf("ServerNow is %s from the local clock, want the server's (+3h)", off)
	}
	if c.Token() != "" {
		t.Fatal("Session set the token by itself")
	}
	c.SetToken(s.SessionToken)
	if _, err := c.ReportHardware(ctx, wire.HardwareReport{MACAddress: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: c.AuthTransport(nil)}
	for _, u := range []string{api.URL + "/images/debian/12", other.URL + "/x"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	for path, want := range map[string]string{
		wire.PathSession:    "Bearer b_boot",
		wire.PathHardware:   "Bearer s_sess",
		"/images/debian/12": "Bearer s_sess",
		"other":             "",
	} {
		if seen[path] != want {
			t.Errorf("%s got Authorization %q, want %q", path, seen[path], want)
		}
	}
}
