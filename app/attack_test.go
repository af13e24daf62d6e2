package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

// Attacks on a real `lpmos serve` child from loopback addresses other than
// 127.0.0.1 (the "provisioning network"); the real client is 127.0.0.1.

// agentURL is the child's agent API.
func (p *lpmosProc) agentURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.ports[1]) }

// dbSize is the size of the child's etcd database file.
func (p *lpmosProc) dbSize(t testing.TB) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(p.dataDir, "etcd", "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// rss is the child's resident set size in bytes.
func (p *lpmosProc) rss(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the child's status (did it die?): %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// alive fails the test if the child exited.
func (p *lpmosProc) alive(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("lpmos died: %v", err)
	}
}

// clientFrom is an HTTP client whose connections come from source address src.
func clientFrom(src string, timeout time.Duration) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
}

// metric reads one sample of /metrics whose line starts with prefix.
func (p *lpmosProc) metric(t testing.TB, prefix string) float64 {
	t.Helper()
	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	t.Fatalf("no metric %s in /metrics", prefix)
	return 0
}

func postJSON(c *http.Client, url string, body []byte) (int, string, error) {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var e wire.Error
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.Error, nil
}

// TestAttackOversizedHardwareReports replays the 1 MB cpu.model attack:
// 300 reports without a token (etcd grew by 330 MiB before the limits).
// Every one is refused, and etcd and the process stay small.
func TestAttackOversizedHardwareReports(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--agent-rate", "0") // the field limits alone
	p.waitHealthy(t, 30*time.Second)
	db0, rss0 := p.dbSize(t), p.rss(t)
	tests := []struct {
		name    string
		model   int
		want    int
		wantErr string
	}{
		{"1 MB cpu.model: over the body limit", 1 << 20, http.StatusRequestEntityTooLarge, "request body is larger than 65536 bytes"},
		{"32 KiB cpu.model: over the field limit", 32 << 10, http.StatusBadRequest, "hardware.cpu.model: 32768 bytes, at most 256"},
	}
	c := clientFrom("127.0.0.2", 10*time.Second)
	// One connection per report: the server closes a connection whose body
	// it refused unread, and a client reusing it races that close.
	c.Transport.(*http.Transport).DisableKeepAlives = true
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var bad atomic.Int32
			var firstBad atomic.Value
			var resets atomic.Int32
			sem := make(chan struct{}, 16) // within --max-conns-per-ip
			for i := range 150 {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					rep := wire.HardwareReport{MACAddress: fmt.Sprintf("52:54:00:ee:%02x:%02x", i>>8, i&255),
						Hardware: wire.Hardware{CPU: wire.CPU{Model: strings.Repeat("A", tc.model)}}}
					body, _ := json.Marshal(rep)
					code, msg, err := postJSON(c, p.agentURL()+wire.PathHardware, body)
					// The per-source connection cap may still count the
					// connections the server just closed on earlier
					// refusals: a client retries, as the answer says.
					for try := 0; err == nil && code == http.StatusServiceUnavailable && strings.HasPrefix(msg, "too many connections") && try < 50; try++ {
						time.Sleep(100 * time.Millisecond)
						code, msg, err = postJSON(c, p.agentURL()+wire.PathHardware, body)
					}
					if err != nil && tc.want == http.StatusRequestEntityTooLarge && (strings.Contains(err.Error(), "connection reset by peer") || strings.Contains(err.Error(), "broken pipe")) {
						// The server answered 413 and closed while the
						// client still wrote the rest of the megabyte
						// (a reset, or EPIPE on the client's next write).
						resets.Add(1)
						return
					}
					if err != nil || code != tc.want || msg != tc.wantErr {
						bad.Add(1)
						firstBad.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", code, msg, err))
					}
				})
			}
			wg.Wait()
			if n := bad.Load(); n > 0 {
				t.Fatalf("%d of 150 reports not refused as %d %q; first: %v", n, tc.want, tc.wantErr, firstBad.Load())
			}
			t.Logf("150 refused (%d of them seen by the client as a reset while it still sent the body)", resets.Load())
		})
	}
	db1, rss1 := p.dbSize(t), p.rss(t)
	t.Logf("etcd db %d -> %d bytes, RSS %d -> %d MiB", db0, db1, rss0>>20, rss1>>20)
	if db1-db0 > 1<<20 {
		t.Errorf("etcd grew by %d bytes under refused reports, want < 1 MiB", db1-db0)
	}
	if rss1 > 400<<20 {
		t.Errorf("RSS %d MiB after 300 oversized reports, want < 400 MiB", rss1>>20)
	}
	if got := p.metric(t, "lpmos_hardware_reports_refused_total"); got != 300 {
		t.Errorf("lpmos_hardware_reports_refused_total = %v, want 300", got)
	}
	p.stop(t)
}

// TestAttackSlowConnections holds 5,000 idle and slow connections (slow
// headers, slow bodies) from seven loopback addresses against both listeners
// of a child limited to 1,024 descriptors: it stays up, and a real client
// on 127.0.0.1 is answered within 5 s on both ports.
func TestAttackSlowConnections(t *testing.T) {
	t.Parallel()
	testenv.RequireTool(t, "prlimit", "util-linux")
	dir := t.TempDir()
	args, url, ports := serveArgs(t, dir)
	p := &lpmosProc{dataDir: dir, url: url, ports: ports, prefix: []string{"prlimit", "--nofile=1024:1024", "--"}}
	spawn(t, "lpmos", p, args)
	p.waitHealthy(t, 30*time.Second)
	if !strings.Contains(p.logText(), `max_conns_per_listener=384`) {
		t.Fatalf("the child did not size its caps from 1024 descriptors:\n%s", p.logText())
	}

	const total, sources = 5000, 7
	var (
		mu       sync.Mutex
		held     []net.Conn
		dialErrs atomic.Int32
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	targets := []string{fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range work {
				src := fmt.Sprintf("127.0.0.%d", 2+i%sources)
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
				c, err := d.Dial("tcp", targets[i%2])
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				switch i % 3 {
				case 0: // idle: nothing at all
				case 1: // slow headers: never finished
					_, _ = c.Write([]byte("GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: "))
				case 2: // slow body: promised 1 MB, sent 10 bytes
					_, _ = c.Write([]byte("POST " + wire.PathHardware + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"mac_addr"))
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range total {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("%d connections opened in %v (%d dials failed)", len(held), time.Since(start).Round(time.Millisecond), dialErrs.Load())
	if len(held) < total*9/10 {
		t.Fatalf("only %d of %d attack connections opened", len(held), total)
	}

	// The real client, from 127.0.0.1, while every attack connection is held.
	real := clientFrom("127.0.0.1", 5*time.Second)
	for _, u := range []string{p.url + "/api/v1/health", p.agentURL() + "/healthz"} {
		t0 := time.Now()
		resp, err := real.Get(u)
		if err != nil {
			t.Fatalf("real client: %s: %v (after %v)", u, err, time.Since(t0))
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("real client: %s: %d", u, resp.StatusCode)
		}
		t.Logf("real client: %s answered in %v", u, time.Since(t0).Round(time.Millisecond))
	}
	p.alive(t)
	open := p.metric(t, `lpmos_http_connections_open{listener="agent-api"}`) + p.metric(t, `lpmos_http_connections_open{listener="control-plane"}`)
	refused := p.metric(t, `lpmos_http_connections_refused_total{listener="agent-api"}`) + p.metric(t, `lpmos_http_connections_refused_total{listener="control-plane"}`)
	evicted := p.metric(t, `lpmos_http_connections_evicted_total{listener="agent-api"}`) + p.metric(t, `lpmos_http_connections_evicted_total{listener="control-plane"}`)
	fds := p.metric(t, "process_open_fds")
	t.Logf("open %v, refused %v, evicted %v, process_open_fds %v", open, refused, evicted, fds)
	if open > 2*384 || fds >= 1024-100 {
		t.Errorf("open connections %v, descriptors %v: want <= 768 and headroom under 1024", open, fds)
	}
	if refused == 0 {
		t.Error("no connection was refused")
	}
	if errs := p.metric(t, `lpmos_http_accept_errors_total{listener="agent-api"}`); errs != 0 {
		t.Logf("accept errors on the agent API: %v", errs)
	}
	// etcd still writes: the operator can create a task.
	code, err := apiDo(t, "POST", p.url+"/api/v1/tasks", p.token(t), map[string]any{
		"region_id": "dc1", "target_mac": "52:54:00:aa:bb:cc", "os_type": "ubuntu", "os_version": "22.04", "allow_missing_image": true}, nil)
	if err != nil || code != http.StatusCreated {
		t.Errorf("create a task during the attack: %d %v", code, err)
	}

	// The server's timeouts reclaim the held connections while the
	// attacker keeps them open: idle and slow headers after
	// ReadHeaderTimeout (10 s), slow bodies after ReadTimeout (30 s).
	openNow := func() float64 {
		return p.metric(t, `lpmos_http_connections_open{listener="agent-api"}`) + p.metric(t, `lpmos_http_connections_open{listener="control-plane"}`)
	}
	t0 := time.Now()
	for openNow() > 10 {
		if time.Since(t0) > 45*time.Second {
			t.Fatalf("%v connections still open %v after the attack: the timeouts do not reclaim them", openNow(), time.Since(t0).Round(time.Second))
		}
		time.Sleep(time.Second)
	}
	t.Logf("held connections reclaimed by the server's timeouts in %v", time.Since(t0).Round(time.Second))

	mu.Lock()
	for _, c := range held {
		c.Close()
	}
	held = nil
	mu.Unlock()
	p.alive(t)
	p.stop(t)
}

// TestAttackDiscoveryLimitsFromEnv: the rate limit and the discovery cap
// come from LPMOS_* variables, answer 429 with Retry-After and 503, and are
// counted in /metrics.
func TestAttackDiscoveryLimitsFromEnv(t *testing.T) {
	// Parallel: at 0.01 requests a second a token comes back after 100 s,
	// so a slow (loaded) run still sees the burst spent, and the Retry-After
	// it is told is 100 s less the time since the burst began (checked
	// below to be 90-100 s). At 0.2/s ("retry after 5s" exactly) the test
	// had to run alone, before the parallel tests.
	t.Parallel()
	dir := t.TempDir()
	args, url, ports := serveArgs(t, dir)
	p := &lpmosProc{dataDir: dir, url: url, ports: ports,
		env: []string{"LPMOS_AGENT_RATE=0.01", "LPMOS_AGENT_BURST=3", "LPMOS_MAX_DISCOVERED=2"}}
	spawn(t, "lpmos", p, args)
	p.waitHealthy(t, 30*time.Second)
	report := func(mac string) []byte {
		b, _ := json.Marshal(wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{BootMode: "uefi"}})
		return b
	}
	a, b := clientFrom("127.0.0.2", 5*time.Second), clientFrom("127.0.0.3", 5*time.Second)
	steps := []struct {
		name    string
		c       *http.Client
		mac     string
		want    int
		wantErr string
	}{
		{"first machine", a, "52:54:00:00:0e:01", 200, ""},
		{"second machine", a, "52:54:00:00:0e:02", 200, ""},
		{"third machine: over the cap", a, "52:54:00:00:0e:03", 503, "discovered machines at their cap: 2 stored, at most 2"},
		{"fourth report from .2: over the burst", a, "52:54:00:00:0e:01", 429, "too many requests from 127.0.0.2: retry after "},
		{"another address still gets through", b, "52:54:00:00:0e:01", 200, ""},
	}
	for _, s := range steps {
		code, msg, err := postJSON(s.c, p.agentURL()+wire.PathHardware, report(s.mac))
		if err != nil || code != s.want || !strings.HasPrefix(msg, s.wantErr) {
			t.Errorf("%s: %d %q %v, want %d %q", s.name, code, msg, err, s.want, s.wantErr)
		}
		if code == 429 {
			var secs int
			if _, err := fmt.Sscanf(strings.TrimPrefix(msg, s.wantErr), "%ds", &secs); err != nil || secs < 90 || secs > 100 {
				t.Errorf("%s: %q, want retry after 90-100s (one token per 100 s)", s.name, msg)
			}
		}
	}
	resp, err := a.Get(p.agentURL() + "/boot/52:54:00:00:0e:09.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("iPXE script over the rate: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := p.metric(t, "lpmos_discovery_refused_total"); got != 1 {
		t.Errorf("lpmos_discovery_refused_total = %v, want 1", got)
	}
	if got := p.metric(t, "lpmos_agent_rate_limited_total"); got != 2 {
		t.Errorf("lpmos_agent_rate_limited_total = %v, want 2", got)
	}
	p.stop(t)
}
