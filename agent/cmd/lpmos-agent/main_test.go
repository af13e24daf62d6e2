package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

func TestRunByHand(t *testing.T) {
	// A minimal agent API for the demo: the boot token is exchanged for a
	// session, the task is approved at once.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathSession {
			if r.Header.Get("Authorization") != "Bearer b1" {
				w.WriteHeader(401)
				_ = json.NewEncoder(w).Encode(wire.Error{Error: "bad boot token"})
				return
			}
			_ = json.NewEncoder(w).Encode(wire.SessionResponse{SessionToken: "s1", TaskID: "t1", Status: wire.StatusReady})
			return
		}
		if r.Header.Get("Authorization") != "Bearer s1" {
			w.WriteHeader(401)
			_ = json.NewEncoder(w).Encode(wire.Error{Error: "no session"})
			return
		}
		switch {
		case r.URL.Path == wire.PathHardware:
			_ = json.NewEncoder(w).Encode(wire.HardwareResponse{TaskID: "t1", Status: wire.StatusPendingApproval})
		case strings.HasPrefix(r.URL.Path, wire.PathApproval):
			_ = json.NewEncoder(w).Encode(wire.ApprovalResponse{TaskID: "t1", Status: wire.StatusApproved, Approved: true,
				Install: &wire.InstallSpec{OSType: "debian", OSVersion: "12"}})
		case r.URL.Path == wire.PathProgress:
			_ = json.NewEncoder(w).Encode(wire.ProgressResponse{Status: wire.StatusInstalling})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	fixture := "../../../testdata/agent/qemu-vm"
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantFirst  string // first stderr line
		wantStdout string
	}{
		{
			name: "demo against a server", env: map[string]string{"REGIONAL_CLIENT_URL": srv.URL, "LPMOS_AGENT_TOKEN": "b1"},
			args: []string{"--sysroot", fixture}, wantCode: 0,
			wantFirst: "lpmos-agent: demo mode: no --disk given, nothing will be written to any disk",
		},
		{
			name: "hardware json", args: []string{"--hardware-json", "--sysroot", fixture}, wantCode: 0,
			wantStdout: `"product": "Standard PC (i440FX + PIIX, 1996)"`,
		},
		{
			name: "boot token refused", env: map[string]string{"REGIONAL_CLIENT_URL": srv.URL, "LPMOS_AGENT_TOKEN": "used"},
			args: []string{"--sysroot", fixture}, wantCode: 1,
		},
		{name: "bad flag", args: []string{"--bogus"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runByHand(tt.args, func(k string) string { return tt.env[k] }, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if first, _, _ := strings.Cut(stderr.String(), "\n"); tt.wantFirst != "" && first != tt.wantFirst {
				t.Errorf("first line %q, want %q", first, tt.wantFirst)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantStdout, stdout.String())
			}
			if tt.name == "demo against a server" && !strings.Contains(stderr.String(), "demo complete") {
				t.Errorf("demo did not complete:\n%s", stderr.String())
			}
		})
	}
}
