package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestCheckPprofAddr(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1:6060", "[::1]:6060", "localhost:6060", "127.0.0.2:0"} {
		if err := checkPprofAddr(ok); err != nil {
			t.Errorf("checkPprofAddr(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.0.0.1:6060", "example.com:6060", "127.0.0.1", "127.0.0.1:"} {
		if err := checkPprofAddr(bad); err == nil {
			t.Errorf("checkPprofAddr(%q) = nil, want a refusal", bad)
		}
	}
}

func TestServePprofHeapProfile(t *testing.T) {
	ln, err := listenPprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- servePprof(ctx, ln, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("heap profile: %d %.200s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("servePprof: %v", err)
	}
}
