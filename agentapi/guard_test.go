package agentapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

func TestRateLimitUnauthenticated(t *testing.T) { // not parallel: Retry-After counts whole seconds since the burst
	st := newStore(t)
	r := newRegion(t, st, "dc1", func(c *Config) { c.AgentRate, c.AgentBurst = 0.01, 3 })
	task := createTask(t, st, "dc1")
	advance(t, r, task.ID, wire.StatusReady)
	tok := sessionFor(t, st, task.ID)
	disc := func() any {
		return wire.HardwareReport{MACAddress: nextMAC(), Hardware: wire.Hardware{BootMode: "uefi"}}
	}
	steps := []struct {
		name, method, path, token string
		body                      any
		want                      int
	}{
		{"discovery 1", "POST", wire.PathHardware, "", disc(), 200},
		{"boot script 2", "GET", "/boot/" + nextMAC() + ".ipxe", "", nil, 200},
		{"approval poll without token 3", "GET", wire.PathApproval + nextMAC(), "", nil, http.StatusUnauthorized},
		{"discovery 4: over the burst", "POST", wire.PathHardware, "", disc(), http.StatusTooManyRequests},
		{"boot script: limited", "GET", "/boot/" + nextMAC() + ".ipxe", "", nil, http.StatusTooManyRequests},
		{"session exchange: limited", "POST", pathSession, "", []byte(`{}`), http.StatusTooManyRequests},
		{"approval without token: limited", "GET", wire.PathApproval + nextMAC(), "", nil, http.StatusTooManyRequests},
		{"with a token: not limited", "GET", wire.PathApproval + task.Spec.TargetMAC, tok, nil, 200},
		{"progress with a token: not limited", "POST", wire.PathHardware, tok, wire.HardwareReport{TaskID: task.ID, MACAddress: task.Spec.TargetMAC, Hardware: wire.Hardware{BootMode: "bios"}}, 200},
		{"health: not limited", "GET", "/healthz", "", nil, 200},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if got := call(t, s.method, r.srv.URL+s.path, s.token, s.body, nil); got != s.want {
				t.Fatalf("status %d, want %d", got, s.want)
			}
		})
	}
	req, _ := http.NewRequest("POST", r.srv.URL+wire.PathHardware, strings.NewReader(`{"mac_address":"`+nextMAC()+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e wire.Error
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "100" || json.NewDecoder(resp.Body).Decode(&e) != nil || !strings.Contains(e.Error, "too many requests from 127.0.0.1") {
		t.Fatalf("429 answer: %d Retry-After %q error %q", resp.StatusCode, resp.Header.Get("Retry-After"), e.Error)
	}
	if s := r.LimitStats(); s.RateLimited != 5 || s.RateSources != 1 {
		t.Errorf("stats %+v, want 5 limited from 1 source", s)
	}
}

// A made-up token does not get around the rate limit; a valid one is never
// charged.
func TestRateLimitBadTokens(t *testing.T) { // not parallel: Retry-After counts whole seconds since the burst
	st := newStore(t)
	r := newRegion(t, st, "dc1", func(c *Config) { c.AgentRate, c.AgentBurst = 0.01, 3 })
	task := createTask(t, st, "dc1")
	advance(t, r, task.ID, wire.StatusReady)
	tok := sessionFor(t, st, task.ID)
	steps := []struct {
		name, path, token string
		want              int
	}{
		{"valid token", wire.PathApproval + task.Spec.TargetMAC, tok, 200},
		{"valid token again", wire.PathApproval + task.Spec.TargetMAC, tok, 200},
		{"valid token again", wire.PathApproval + task.Spec.TargetMAC, tok, 200},
		{"valid token, past the burst: never charged", wire.PathApproval + task.Spec.TargetMAC, tok, 200},
		{"made-up token 1", wire.PathApproval + task.Spec.TargetMAC, "forged", http.StatusUnauthorized},
		{"made-up token 2, unknown MAC", wire.PathApproval + nextMAC(), "forged", http.StatusUnauthorized},
		{"made-up token 3, progress", wire.PathProgress, "forged", http.StatusUnauthorized},
		{"made-up token 4: limited", wire.PathApproval + task.Spec.TargetMAC, "forged", http.StatusTooManyRequests},
		{"and so is this source's valid token now", wire.PathApproval + task.Spec.TargetMAC, tok, http.StatusTooManyRequests},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			method, body := "GET", any(nil)
			if s.path == wire.PathProgress {
				method, body = "POST", wire.Progress{TaskID: task.ID, Seq: 1, Stage: wire.StagePartitioning, Percentage: 1}
			}
			if got := call(t, method, r.srv.URL+s.path, s.token, body, nil); got != s.want {
				t.Fatalf("status %d, want %d", got, s.want)
			}
		})
	}
	// Unauthenticated calls have their own bucket, still full.
	if got := call(t, "POST", r.srv.URL+wire.PathHardware, "", wire.HardwareReport{MACAddress: nextMAC()}, nil); got != 200 {
		t.Errorf("discovery from the same source: %d", got)
	}
}

func TestMaxDiscovered(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", func(c *Config) { c.MaxDiscovered = 2 })
	report := func(mac, model string) wire.HardwareReport {
		return wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{CPU: wire.CPU{Model: model}}}
	}
	a, b, c := nextMAC(), nextMAC(), nextMAC()
	steps := []struct {
		name    string
		rep     wire.HardwareReport
		want    int
		wantErr string
	}{
		{"first", report(a, "x"), 200, ""},
		{"second", report(b, "x"), 200, ""},
		{"a third is refused", report(c, "x"), http.StatusServiceUnavailable, "discovered machines at their cap: 2 stored, at most 2: machine " + c + " not recorded"},
		{"a known one still updates", report(a, "y"), 200, ""},
		{"a known one unchanged", report(a, "y"), 200, ""},
		{"an over-limit report is refused before", report(c, strings.Repeat("m", 300)), 400, "hardware.cpu.model: 300 bytes, at most 256"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var e wire.Error
			if got := call(t, "POST", r.srv.URL+wire.PathHardware, "", s.rep, &e); got != s.want {
				t.Fatalf("status %d, want %d (%s)", got, s.want, e.Error)
			}
			if !strings.HasPrefix(e.Error, s.wantErr) {
				t.Errorf("error %q, want %q...", e.Error, s.wantErr)
			}
		})
	}
	if m, err := st.GetMachine(t.Context(), a); err != nil || m.Hardware.CPU.Model != "y" {
		t.Errorf("known machine not updated: %+v %v", m, err)
	}
	if s := r.LimitStats(); s.DiscoveryRefused != 1 || s.HardwareRefused != 1 {
		t.Errorf("stats %+v, want 1 discovery and 1 hardware refusal", s)
	}
}

func TestStreamingPaths(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		wire.PathApproval + "52:54:00:00:00:01?wait=30s": true,
		wire.PathImages + "ubuntu/22.04":                 true,
		"/boot/files/vmlinuz":                            true,
		"/boot/52:54:00:00:00:01.ipxe":                   false,
		wire.PathHardware:                                false,
		wire.PathProgress:                                false,
	} {
		req, _ := http.NewRequest("GET", "http://x"+path, nil)
		if got := streaming(req); got != want {
			t.Errorf("streaming(%s) = %v, want %v", path, got, want)
		}
	}
}
