package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/app"
	"github.com/lpmos/lpmos/store/storetest"
)

// TestMain lets the test binary act as the lpmos command, so tests can run
// `lpmos serve` as a real process and stop it with a real signal.
func TestMain(m *testing.M) {
	if os.Getenv("LPMOS_TEST_BE_LPMOS") == "1" {
		os.Exit(app.Main("test", os.Args[1:]))
	}
	flag.Parse()
	parallelAtLeast(minParallel)
	os.Exit(m.Run())
}

// minParallel is how many parallel tests run at once unless -parallel says
// otherwise. The default, GOMAXPROCS (2 on the CI box), suits tests that
// compute; most of this package's tests wait instead: for a child lpmos
// to start or stop, a certificate to expire, a server timeout to fire.
const minParallel = 4

// parallelAtLeast raises -test.parallel to n when it was not given.
func parallelAtLeast(n int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if f := flag.Lookup("test.parallel"); f != nil && !set {
		if cur, err := strconv.Atoi(f.Value.String()); err == nil && cur < n {
			_ = f.Value.Set(strconv.Itoa(n))
		}
	}
}

// lpmosProc is a running `lpmos serve` child process.
type lpmosProc struct {
	cmd     *exec.Cmd
	dataDir string
	url     string
	ports   []int
	mu      sync.Mutex
	log     bytes.Buffer
	prefix  []string // run the child under this command (e.g. prlimit ...)
	env     []string // extra environment of the child (KEY=value), so a test can stay parallel
}

// serveArgs returns the flags that give a serve process its own ports.
func serveArgs(t testing.TB, dataDir string) (args []string, url string, ports []int) {
	cp, api, ec, ep := storetest.FreePort(t), storetest.FreePort(t), storetest.FreePort(t), storetest.FreePort(t)
	// DHCP and TFTP listen on loopback only: a test never answers the
	// host's network.
	dhcp, pxe, tftp := storetest.FreePort(t), storetest.FreePort(t), storetest.FreePort(t)
	return []string{
		"serve", "--data-dir", dataDir,
		"--listen-addr", fmt.Sprintf("127.0.0.1:%d", cp),
		"--api-port", fmt.Sprint(api),
		"--etcd-client-url", fmt.Sprintf("https://127.0.0.1:%d", ec),
		"--etcd-peer-url", fmt.Sprintf("https://127.0.0.1:%d", ep),
		"--advertise-ip", "127.0.0.1",
		"--dhcp-addr", fmt.Sprintf("127.0.0.1:%d", dhcp),
		"--pxe-addr", fmt.Sprintf("127.0.0.1:%d", pxe),
		"--tftp-addr", fmt.Sprintf("127.0.0.1:%d", tftp),
		// The tests of other things call the agent API and the control
		// plane in plain HTTP: TestAgentAPIOverTLS and https_test.go run
		// the defaults (HTTPS).
		"--agent-tls", "off",
		"--tls=off",
	}, fmt.Sprintf("http://127.0.0.1:%d", cp), []int{cp, api, ec, ep}
}

func startServe(t testing.TB, dataDir string, extra ...string) *lpmosProc {
	t.Helper()
	args, url, ports := serveArgs(t, dataDir)
	p := &lpmosProc{dataDir: dataDir, url: url, ports: ports}
	spawn(t, "lpmos", p, append(args, extra...))
	return p
}

// spawn starts `lpmos args...` (this test binary acting as lpmos) as p's
// child process, collects its log, and when the test ends kills it if it
// still runs, fails the test on a data race in it, and prints its log if
// the test failed (or LPMOS_TEST_LOGS=1).
func spawn(t testing.TB, name string, p *lpmosProc, args []string) {
	t.Helper()
	p.cmd = exec.Command(os.Args[0], args...)
	if len(p.prefix) > 0 {
		p.cmd = exec.Command(p.prefix[0], append(append(p.prefix[1:len(p.prefix):len(p.prefix)], os.Args[0]), args...)...)
	}
	p.cmd.Env = append(append(os.Environ(), "LPMOS_TEST_BE_LPMOS=1"), p.env...)
	// exec copies stderr into the log and Wait returns only once the copy
	// reached the end: a test that reads the log after Wait sees all of it.
	// (With StderrPipe and a reader goroutine, Wait closed the pipe as the
	// child exited, before the goroutine had read a short-lived child's
	// last lines: TestServeOnLockedDataDirFails saw an empty message.)
	p.cmd.Stderr = (*procLog)(p)
	// A grandchild that kept stderr open must not hold Wait forever.
	p.cmd.WaitDelay = 10 * time.Second
	// The child dies with the test binary: a binary killed mid-suite (or
	// ended by -timeout, which runs no Cleanup) left its lpmos children
	// running, loading the box and holding ports for the next run.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if strings.Contains(p.logText(), "WARNING: DATA RACE") {
			t.Errorf("%s: data race in the lpmos process", name)
		}
		if t.Failed() || os.Getenv("LPMOS_TEST_LOGS") == "1" {
			t.Logf("%s log (%v):\n%s", name, args[:1], p.logText())
		}
	})
}

// procLog is the child's stderr: it appends to p.log.
type procLog lpmosProc

func (l *procLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.log.Write(b)
}

func (p *lpmosProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitHealthy polls /api/v1/health until it answers 200.
func (p *lpmosProc) waitHealthy(t testing.TB, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		resp, err := http.Get(p.url + "/api/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("lpmos not healthy after %s", within)
	return 0
}

func (p *lpmosProc) stop(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("lpmos exited with %v after SIGINT", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("lpmos did not stop within 15s of SIGINT")
	}
	for _, port := range p.ports {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("port %d still listening after stop", port)
		}
	}
}

func (p *lpmosProc) token(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(p.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// cli runs an lpmos CLI command in process against p.
func (p *lpmosProc) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := app.NewRoot("test", &out, &errOut)
	root.SetArgs(append(args, "--server", p.url, "--data-dir", p.dataDir))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestServeStartsAnswersAndStopsCleanly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir)
	took := p.waitHealthy(t, 30*time.Second)
	t.Logf("healthy after %s", took)
	info, err := os.Stat(filepath.Join(dir, "admin.token"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v mode %v", err, info.Mode())
	}
	if !strings.Contains(p.logText(), filepath.Join(dir, "admin.token")) {
		t.Errorf("serve did not say where the admin token is")
	}
	wanted := []string{"etcd", "control-plane", "region/dc1/agent-api", "region/dc1/dhcp-proxy", "region/dc1/tftp"}
	// The region's services join the health report once the region has
	// started, which on a busy box comes after the first 200: wait until
	// every one is listed and past starting, then each must be running.
	names := map[string]string{}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var rep struct {
			Status   string
			Services []struct{ Name, State string }
		}
		resp, err := http.Get(p.url + "/api/v1/health")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		names = map[string]string{}
		for _, s := range rep.Services {
			names[s.Name] = s.State
		}
		settled := 0
		for _, want := range wanted {
			if st, ok := names[want]; ok && st != "starting" {
				settled++
			}
		}
		if settled == len(wanted) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range wanted {
		if names[want] != "running" {
			t.Errorf("health: %s is %q, want running (all: %v)", want, names[want], names)
		}
	}
	// Once the start-up loads are done, serve returns the memory they
	// needed to the OS, once (app/memrelease.go).
	const released = "the start-up loads are done"
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(p.logText(), released); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within 30s", released)
		}
	}
	p.stop(t)
	log := p.logText()
	if n := strings.Count(log, released); n != 1 {
		t.Errorf("%q %d times in the log, want once", released, n)
	}
	if i := strings.Index(log, "live updates: snapshot loaded"); i < 0 || i > strings.Index(log, released) {
		t.Errorf("memory released before the live view's snapshot was loaded (or it never was)")
	}
}

func TestCLIAgainstServeAndRestartKeepsTasks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir)
	p.waitHealthy(t, 30*time.Second)

	out, err := p.cli(t, "task", "create", "--mac", "00-1A-2B-3C-4D-5E", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image", "--hostname", "web-1", "-o", "json")
	if err != nil {
		t.Fatalf("task create: %v", err)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("create output %q: %v", out, err)
	}
	if _, err := p.cli(t, "task", "create", "--mac", "00:1a:2b:3c:4d:5e", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("duplicate MAC via CLI: %v", err)
	}
	out, err = p.cli(t, "task", "list", "--region", "dc1")
	if err != nil || !strings.Contains(out, created.ID) || !strings.Contains(out, "00:1a:2b:3c:4d:5e") {
		t.Fatalf("task list: %v\n%s", err, out)
	}
	out, err = p.cli(t, "task", "list", "--mac", "00:1a:2b:3c:4d:5e", "-o", "json")
	var listed []struct{ ID string }
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].ID != created.ID {
		t.Fatalf("task list -o json must be a list: %v\n%s", err, out)
	}
	// Approval before the agent reported: 409 naming the current status
	// (pending, or ready once the region claimed it).
	if _, err := p.cli(t, "task", "approve", created.ID); err == nil || !strings.Contains(err.Error(), "409") ||
		!strings.Contains(err.Error(), "is pending") && !strings.Contains(err.Error(), "is ready") {
		t.Fatalf("approve before hardware: %v", err)
	}
	// A wrong token is refused with a message that says so.
	var o, e bytes.Buffer
	root := app.NewRoot("test", &o, &e)
	root.SetArgs([]string{"task", "list", "--server", p.url, "--token", "nope"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	// The token can come from LPMOS_TOKEN instead of the data dir (in the
	// environment of an lpmos process: t.Setenv would keep this test
	// from running in parallel).
	out, errOut, code := runLpmosEnv(t, []string{"LPMOS_TOKEN=" + p.token(t)}, 30*time.Second,
		"task", "get", created.ID, "--server", p.url, "--data-dir", t.TempDir())
	if code != 0 || !strings.Contains(out, "task created") {
		t.Fatalf("task get with LPMOS_TOKEN: exit %d %s\n%s", code, errOut, out)
	}
	p.stop(t)

	// Restart on the same data dir: everything is still there, the token too.
	p2 := startServe(t, dir)
	p2.waitHealthy(t, 30*time.Second)
	out, err = p2.cli(t, "task", "get", created.ID, "-o", "json")
	if err != nil || !strings.Contains(out, `"web-1"`) {
		t.Fatalf("after restart: %v\n%s", err, out)
	}
	p2.stop(t)
}

func TestEnvironmentSetsFlags(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("LPMOS_ROLE", "bogus")
	var o, e bytes.Buffer
	root := app.NewRoot("test", &o, &e)
	root.SetArgs([]string{"serve", "--data-dir", dir})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), `--role "bogus"`) {
		t.Fatalf("LPMOS_ROLE=bogus: %v", err)
	}
	// A flag on the command line wins over the environment.
	t.Setenv("LPMOS_OUTPUT", "xml")
	root = app.NewRoot("test", &o, &e)
	root.SetArgs([]string{"task", "list", "--token", "x", "-o", "json", "--server", "http://127.0.0.1:1"})
	if err := root.Execute(); err == nil || strings.Contains(err.Error(), "xml") {
		t.Fatalf("flag should beat env: %v", err)
	}
	root = app.NewRoot("test", &o, &e)
	root.SetArgs([]string{"task", "list", "--token", "x", "--server", "http://127.0.0.1:1"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), `--output "xml"`) {
		t.Fatalf("LPMOS_OUTPUT=xml: %v", err)
	}
}
