package app_test

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A second serve on a data dir in use fails within seconds, naming the dir
// and the pid that holds it (it used to hang forever in bbolt's flock); the
// first keeps running, and once it stopped the dir can be served again.
func TestServeOnLockedDataDirFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p1 := startServe(t, dir)
	p1.waitHealthy(t, 30*time.Second)

	p2 := &lpmosProc{dataDir: dir}
	args, _, _ := serveArgs(t, dir)
	start := time.Now()
	spawn(t, "second serve", p2, args)
	done := make(chan error, 1)
	go func() { done <- p2.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		// Reap it here: spawn's cleanup must not Wait beside this goroutine.
		_ = p2.cmd.Process.Kill()
		<-done
		t.Fatal("a second serve on the same data dir still runs after 10s")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("second serve exited with %v, want a non-zero exit code", err)
	}
	log := p2.logText()
	for _, want := range []string{dir, fmt.Sprintf("pid %d", p1.cmd.Process.Pid), "--data-dir"} {
		if !strings.Contains(log, want) {
			t.Errorf("second serve's message lacks %q:\n%s", want, log)
		}
	}
	t.Logf("second serve refused after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(log))
	p1.alive(t)
	p1.stop(t)
	p3 := startServe(t, dir) // the lock went with the first process
	p3.waitHealthy(t, 30*time.Second)
	p3.stop(t)
}
