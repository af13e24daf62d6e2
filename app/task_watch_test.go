package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// runLpmos runs this test binary as the lpmos CLI in a child process and
// returns its output and real exit code.
func runLpmos(t *testing.T, within time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runLpmosEnv(t, nil, within, args...)
}

// runLpmosEnv is runLpmos with env (KEY=value) added to the child's
// environment (t.Setenv would keep the test from running in parallel).
func runLpmosEnv(t *testing.T, env []string, within time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runLpmosTee(t, env, nil, within, args...)
}

// runLpmosTee is runLpmosEnv that also copies the child's stdout to tee
// as it comes (when tee is not nil).
func runLpmosTee(t *testing.T, env []string, tee io.Writer, within time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "LPMOS_TEST_BE_LPMOS=1"), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if tee != nil {
		cmd.Stdout = io.MultiWriter(&o, tee)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("lpmos %v: %v", args, err)
		}
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("lpmos %v still runs after %s:\nstdout: %s\nstderr: %s", args, within, o.String(), e.String())
	}
	return o.String(), e.String(), code
}

// watchServer serves /watch streams made of the given lines, one stream
// per request in order; a request beyond them gets a 503.
func watchServer(t *testing.T, streams ...[]string) *httptest.Server {
	t.Helper()
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/watch") {
			http.NotFound(w, r)
			return
		}
		if n >= len(streams) { // the server is gone (restarting, unreachable)
			http.Error(w, `{"error":"starting"}`, http.StatusServiceUnavailable)
			return
		}
		s := streams[n]
		n++
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, l := range s {
			fmt.Fprintln(w, l)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func snapshotLine(status, reason string) string {
	b, _ := json.Marshal(map[string]any{"type": "snapshot", "task_id": "t1", "task": map[string]any{
		"id": "t1", "status": map[string]any{"status": status, "reason": reason}}})
	return string(b)
}

func statusLine(status, reason string) string {
	b, _ := json.Marshal(map[string]any{"type": "status", "task_id": "t1", "status": map[string]any{"status": status, "reason": reason}})
	return string(b)
}

// task watch's exit code says how the task ended; a stream that ends
// without an ending is a lost connection, retried and then exit 4.
func TestTaskWatchExitCodes(t *testing.T) {
	t.Parallel()
	progress := `{"type":"progress","task_id":"t1","progress":{"percentage":40,"stage":"downloading","message":"40 MB"}}`
	tests := []struct {
		name     string
		streams  [][]string
		flags    []string
		code     int
		stdout   string
		stderr   []string
		noStderr bool
	}{
		{name: "completed while watching", streams: [][]string{{snapshotLine("installing", ""), progress, statusLine("completed", "")}},
			code: 0, stdout: "downloading", noStderr: true},
		{name: "already completed", streams: [][]string{{snapshotLine("completed", "")}}, code: 0, stdout: "is completed", noStderr: true},
		{name: "failed", streams: [][]string{{snapshotLine("installing", ""), statusLine("failed", "disk sda is gone")}},
			code: 2, stderr: []string{"task t1 failed: disk sda is gone"}},
		{name: "already cancelled", streams: [][]string{{snapshotLine("cancelled", "cancelled by alice")}},
			code: 3, stderr: []string{"task t1 was cancelled: cancelled by alice"}},
		{name: "server restarts mid-install, then completed", streams: [][]string{{snapshotLine("installing", "")}, {snapshotLine("installing", ""), statusLine("completed", "")}},
			code: 0, stderr: []string{"connection to", "lost", "reconnecting"}},
		{name: "connection lost for good", streams: [][]string{{snapshotLine("installing", ""), progress}}, flags: []string{"--reconnect-timeout", "1s"},
			code: 4, stderr: []string{"connection lost", "last seen installing", "outcome is unknown"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := watchServer(t, tc.streams...)
			args := append([]string{"task", "watch", "t1", "--server", srv.URL, "--token", "x"}, tc.flags...)
			out, errOut, code := runLpmos(t, 20*time.Second, args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, out)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
			if tc.noStderr && errOut != "" {
				t.Errorf("stderr on success: %s", errOut)
			}
		})
	}
	// Nothing listening at all: the same exit 4, naming the server.
	_, errOut, code := runLpmos(t, 20*time.Second, "task", "watch", "t1", "--server", "http://127.0.0.1:1", "--token", "x", "--reconnect-timeout", "0s")
	if code != 4 || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Fatalf("no server: exit %d, stderr %s", code, errOut)
	}
}

// Against a real serve: watch on an ended task exits at once (the server
// closes the stream), and a watch survives a restart of serve and then
// reports the cancel made on the restarted server.
func TestTaskWatchAcrossServeRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args, url, ports := serveArgs(t, dir)
	p := &lpmosProc{dataDir: dir, url: url, ports: ports}
	spawn(t, "lpmos", p, args)
	p.waitHealthy(t, 30*time.Second)
	cli := func(args ...string) []string {
		return append(args, "--server", url, "--data-dir", dir)
	}
	create := func(mac string) string {
		out, err := p.cli(t, "task", "create", "--mac", mac, "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image", "-o", "json")
		var task struct{ ID string }
		if err != nil || json.Unmarshal([]byte(out), &task) != nil {
			t.Fatalf("create: %v %s", err, out)
		}
		return task.ID
	}
	ended := create("52:54:00:15:02:01")
	if _, err := p.cli(t, "task", "cancel", ended); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runLpmos(t, 10*time.Second, cli("task", "watch", ended)...)
	if code != 3 || !strings.Contains(out, "is cancelled") || !strings.Contains(errOut, "was cancelled: cancelled by operator") {
		t.Fatalf("watch of a cancelled task: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	id := create("52:54:00:15:02:02")
	type result struct {
		out, errOut string
		code        int
	}
	res := make(chan result, 1)
	connected := &firstWrite{ch: make(chan struct{})} // the snapshot's "task ... is pending" line
	go func() {
		o, e, c := runLpmosTee(t, nil, connected, 90*time.Second, cli("task", "watch", id, "--reconnect-timeout", "60s")...)
		res <- result{o, e, c}
	}()
	select {
	case <-connected.ch:
	case r := <-res:
		t.Fatalf("watch ended before the restart: exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.errOut)
	case <-time.After(30 * time.Second):
		t.Fatal("watch printed nothing within 30s")
	}
	p.stop(t)
	time.Sleep(time.Second)
	p2 := &lpmosProc{dataDir: dir, url: url, ports: ports}
	spawn(t, "lpmos (restarted)", p2, args)
	p2.waitHealthy(t, 30*time.Second)
	if _, err := p2.cli(t, "task", "cancel", id); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.code != 3 || !strings.Contains(r.errOut, "reconnecting") || !strings.Contains(r.errOut, "was cancelled") {
			t.Fatalf("watch across a restart: exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.errOut)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not end within 30s of the cancel on the restarted server")
	}
	p2.stop(t)
}

// firstWrite closes ch at its first Write.
type firstWrite struct {
	once sync.Once
	ch   chan struct{}
}

func (f *firstWrite) Write(b []byte) (int, error) {
	f.once.Do(func() { close(f.ch) })
	return len(b), nil
}
