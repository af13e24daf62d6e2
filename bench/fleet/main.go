// Command fleet is the fleet load generator of BENCHMARKS.md: it starts a
// real `lpmos serve` (a built binary, its own temporary data dir, loopback
// only), creates N tasks, claims each through /boot/{mac}.ipxe and the
// agent's session exchange, reports hardware, approves all, then sends
// progress from every simulated agent once a second (or at the interval
// the region asks for) while one dashboard WebSocket client counts what it
// receives. It prints report latency, achieved/offered, lpmos CPU and RSS,
// etcd bytes per install and the dashboard's lag and drops.
//
//	go run ./bench/fleet -n 1000 -duration 30s
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/bench/internal/procstat"
)

type options struct {
	n        int
	duration time.Duration
	lpmos    string
	ips      int
	setupPar int
	keep     bool
	extra    string
	listPage int
	startMax time.Duration
	cold     bool
	poll     time.Duration // hold approval long-polls this long before approving (0: none)
	raw      bool          // progress reports on each agent's own connection, without net/http
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 1000, "simulated agents (tasks)")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long every agent reports progress")
	flag.StringVar(&o.lpmos, "lpmos", "", "lpmos binary (default: go build . into the temp dir)")
	flag.IntVar(&o.ips, "ips", 100, "loopback source addresses the agents come from (127.0.1.x)")
	flag.IntVar(&o.setupPar, "setup-parallel", 32, "parallel requests while creating, claiming and approving")
	flag.BoolVar(&o.keep, "keep", false, "keep the data dir")
	flag.StringVar(&o.extra, "serve-args", "", "extra `lpmos serve` flags, space separated")
	flag.IntVar(&o.listPage, "list-page", 50, "page size of the timed first-page list (0: skip)")
	flag.BoolVar(&o.cold, "cold", false, "agents open their connection with their first progress report (default: each holds one open before the progress starts, as a real agent holds the one its approval long-poll used)")
	flag.DurationVar(&o.poll, "approval-poll", 0, "each agent holds its approval long-poll (GET /api/v1/agent/approval/{mac}?wait=30s, as agent/runner's waitApproval) from its hardware report until it is answered with its install spec; the operator approves after this long (0: no long-poll, the agents start reporting after the approval)")
	flag.BoolVar(&o.raw, "raw-client", false, "each agent reports progress on its own connection with a minimal HTTP/1.1 client on its own goroutine (bench/fleet/rawclient.go) instead of net/http's transport: less of the two cores for the generator")
	flag.DurationVar(&o.startMax, "start-timeout", 3*time.Minute, "how long lpmos may take to answer health (a kept 10,000-task data dir on a loaded box takes over a minute)")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		log.Fatal(err)
	}
}

type proc struct {
	cmd      *exec.Cmd
	dir      string
	url      string
	agentURL string
	token    string
}

func (p *proc) rss() int64 {
	kib, ok := procstat.Status(p.cmd.Process.Pid, "VmRSS")["VmRSS"]
	if !ok {
		return -1
	}
	return kib << 10
}

// cpuTicks is utime+stime of the process in clock ticks (100 Hz).
func (p *proc) cpuTicks() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// metric reads one sample of lpmos's /metrics.
func (p *proc) metric(name string) int64 {
	return int64(procstat.Metric(p.url, name))
}

// dbInUse is etcd's bytes in use, measured by lpmos every second.
func (p *proc) dbInUse() int64 {
	time.Sleep(1500 * time.Millisecond)
	for range 20 {
		if v := p.metric("lpmos_etcd_db_size_in_use_bytes"); v > 0 {
			return v
		}
		time.Sleep(500 * time.Millisecond)
	}
	return -1
}

func start(o options, dir string) (*proc, error) {
	bin := o.lpmos
	if bin == "" {
		bin = filepath.Join(dir, "lpmos")
		b := exec.Command("go", "build", "-o", bin, ".")
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return nil, fmt.Errorf("build lpmos (run from the repository root, or pass -lpmos): %w", err)
		}
	}
	// Every agent connection is a descriptor in lpmos.
	lim := syscall.Rlimit{Cur: 20000, Max: 20000}
	var cur syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur) == nil && cur.Max < lim.Max {
		lim = syscall.Rlimit{Cur: cur.Max, Max: cur.Max}
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("raise the descriptor limit: %w", err)
	}
	data := filepath.Join(dir, "data")
	cp, api := procstat.FreePort(), procstat.FreePort()
	args := []string{"serve", "--data-dir", data,
		"--listen-addr", fmt.Sprintf("127.0.0.1:%d", cp),
		"--api-port", fmt.Sprint(api),
		"--etcd-client-url", fmt.Sprintf("https://127.0.0.1:%d", procstat.FreePort()),
		"--etcd-peer-url", fmt.Sprintf("https://127.0.0.1:%d", procstat.FreePort()),
		"--advertise-ip", "127.0.0.1",
		"--dhcp-addr", fmt.Sprintf("127.0.0.1:%d", procstat.FreePort()),
		"--pxe-addr", fmt.Sprintf("127.0.0.1:%d", procstat.FreePort()),
		"--tftp-addr", fmt.Sprintf("127.0.0.1:%d", procstat.FreePort()),
		"--agent-tls", "off", "--tls=off",
		"--agent-rate", "0", "--max-conns", "15000", "--max-conns-per-ip", "0",
		"--etcd-maintenance-interval", "1s", // measures the db's bytes in use
	}
	if o.extra != "" {
		args = append(args, strings.Fields(o.extra)...)
	}
	logf, err := os.Create(filepath.Join(dir, "lpmos.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start lpmos: %w", err)
	}
	p := &proc{cmd: cmd, dir: data, url: fmt.Sprintf("http://127.0.0.1:%d", cp), agentURL: fmt.Sprintf("http://127.0.0.1:%d", api)}
	deadline := time.Now().Add(o.startMax)
	for {
		resp, err := http.Get(p.url + "/api/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("lpmos not healthy within %v (-start-timeout; log: %s)", o.startMax, logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.token = strings.TrimSpace(string(tok))
	img := filepath.Join(data, "images", "bench.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("lpmos fleet bench\n"), 1<<12), 0o644); err != nil {
		p.stop()
		return nil, err
	}
	add := exec.Command(bin, "image", "add", "bench", "1", img, "--server", p.url, "--data-dir", data)
	if out, err := add.CombinedOutput(); err != nil {
		p.stop()
		return nil, fmt.Errorf("image add: %v: %s", err, out)
	}
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// client is an HTTP client whose connections come from src.
func client(src string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 30 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, MaxIdleConnsPerHost: conns, MaxIdleConns: conns,
	}}
}

// call sends a JSON request and decodes a 2xx answer into out.
func call(c *http.Client, method, url, bearer string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode: %w", method, url, err)
		}
	}
	return resp.StatusCode, nil
}

// get reads url's whole body (2xx only).
func get(c *http.Client, url, bearer string) ([]byte, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, bytes.TrimSpace(data))
	}
	return data, nil
}

type agent struct {
	i       int
	mac     string
	task    string
	session string
	c       *http.Client

	approvedAt atomic.Int64 // unix ns of the approve request (-approval-poll)

	auth       string // "Bearer "+session
	body, resp bytes.Buffer

	raw *rawConn // -raw-client
	req []byte   // -raw-client: the request, reused
}

// report posts one progress report the lean way (the generator shares the
// two cores with lpmos): the body appended to a reused buffer, the answer
// read into another and scanned for next_report_ms, the connection kept
// alive. It returns the interval the region asks for (0: none).
func (a *agent) report(url string, seq int64, stage string, percent int) (int64, error) {
	b := a.body.AvailableBuffer()
	b = append(b, `{"mac_address":"`...)
	b = append(b, a.mac...)
	b = append(b, `","task_id":"`...)
	b = append(b, a.task...)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"stage":"`...)
	b = append(b, stage...)
	b = append(b, `","percentage":`...)
	b = strconv.AppendInt(b, int64(percent), 10)
	b = append(b, `,"message":"bench `...)
	b = append(b, stage...)
	b = append(b, `"}`...)
	a.body.Reset()
	a.body.Write(b) // keeps the grown buffer for the next report
	if a.auth == "" {
		a.auth = "Bearer " + a.session
	}
	code, err := a.post(url)
	if err != nil {
		return 0, err
	}
	if code/100 != 2 {
		return 0, fmt.Errorf("POST %s: %d %s", url, code, bytes.TrimSpace(a.resp.Bytes()))
	}
	const key = `"next_report_ms":`
	data := a.resp.Bytes()
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, nil
	}
	var ms int64
	for _, c := range data[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		ms = ms*10 + int64(c-'0')
	}
	return ms, nil
}

// post sends a.body to url and reads the answer into a.resp.
func (a *agent) post(url string) (int, error) {
	if a.raw != nil {
		a.req = appendRequest(a.req[:0], http.MethodPost, a.raw.addr, strings.TrimPrefix(url, "http://"+a.raw.addr), a.auth, a.body.Bytes())
		return a.raw.do(a.req, &a.resp)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(a.body.Bytes()))
	if err != nil {
		return 0, err
	}
	req.Header["Authorization"] = []string{a.auth}
	req.Header["Content-Type"] = []string{"application/json"}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, err
	}
	a.resp.Reset()
	_, err = a.resp.ReadFrom(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

func parallel(n, par int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  atomic.Int64
	)
	for range par {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

var tokenRE = regexp.MustCompile(`lpmos_token=([A-Za-z0-9_-]+)`)

func hardware(mac string) wire.Hardware {
	return wire.Hardware{
		CPU:      wire.CPU{Model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", Sockets: 2, Cores: 64, Threads: 128},
		Memory:   wire.Memory{TotalBytes: 512 << 30, TotalGB: 512},
		Disks:    []wire.Disk{{Name: "nvme0n1", SizeBytes: 3840755982336, Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: "S64HNE0R" + strings.ReplaceAll(mac, ":", "")}},
		NICs:     []wire.NIC{{Name: "eno1", MAC: mac, Driver: "ixgbe", SpeedMbps: 10000, Link: true}},
		DMI:      wire.DMI{Vendor: "Supermicro", Product: "SYS-1029U-TRT"},
		BootMode: "uefi", Kernel: "6.1.0-18-amd64", CollectedAt: time.Now().UTC(),
	}
}

// setup creates, claims, reports and approves every agent's task.
// It returns lpmos's CPU ticks when the approvals began.
func setup(o options, p *proc, agents []*agent) (int64, error) {
	ctl := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.setupPar}}
	t0 := time.Now()
	err := parallel(len(agents), o.setupPar, func(i int) error {
		a := agents[i]
		var task struct{ ID string }
		_, err := call(ctl, "POST", p.url+"/api/v1/tasks", p.token, map[string]any{
			"region_id": "dc1", "target_mac": a.mac, "os_type": "bench", "os_version": "1", "hostname": fmt.Sprintf("node-%05d", i),
		}, &task)
		a.task = task.ID
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("create tasks: %w", err)
	}
	log.Printf("created %d tasks in %v", len(agents), time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	err = parallel(len(agents), o.setupPar, func(i int) error {
		a := agents[i]
		resp, err := a.c.Get(p.agentURL + "/boot/" + a.mac + ".ipxe")
		if err != nil {
			return err
		}
		script, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := tokenRE.FindSubmatch(script)
		if resp.StatusCode != 200 || m == nil {
			return fmt.Errorf("boot script of %s: %d %s", a.mac, resp.StatusCode, script)
		}
		var sess wire.SessionResponse
		if _, err := call(a.c, "POST", p.agentURL+wire.PathSession, string(m[1]), wire.SessionRequest{MACAddress: a.mac, TaskID: a.task}, &sess); err != nil {
			return err
		}
		a.session = sess.SessionToken
		var hr wire.HardwareResponse
		if _, err := call(a.c, "POST", p.agentURL+wire.PathHardware, a.session, wire.HardwareReport{MACAddress: a.mac, TaskID: a.task, Hardware: hardware(a.mac)}, &hr); err != nil {
			return err
		}
		if hr.Status != wire.StatusPendingApproval {
			return fmt.Errorf("task %s is %s after the hardware report", a.task, hr.Status)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("claim and report hardware: %w", err)
	}
	log.Printf("claimed (boot script, session, hardware) in %v", time.Since(t0).Round(time.Millisecond))
	var polls *approvalPolls
	if o.poll > 0 {
		polls = holdApprovalPolls(p, agents)
		c0, w0 := p.cpuTicks(), time.Now()
		time.Sleep(o.poll)
		log.Printf("approval long-polls held: lpmos CPU %.0f%% of one core while %d agents wait for the operator (%d poll answers before any approval)",
			100*float64(p.cpuTicks()-c0)/100/time.Since(w0).Seconds(), len(agents), polls.requests.Load())
	}
	t0 = time.Now()
	c0 := p.cpuTicks()
	err = parallel(len(agents), o.setupPar, func(i int) error {
		agents[i].approvedAt.Store(time.Now().UnixNano())
		_, err := call(ctl, "PUT", p.url+"/api/v1/tasks/"+agents[i].task+"/approve", p.token, nil, nil)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("approve: %w", err)
	}
	log.Printf("approved in %v", time.Since(t0).Round(time.Millisecond))
	if polls != nil {
		if err := polls.wait(3 * time.Minute); err != nil {
			return 0, err
		}
		cpu := float64(p.cpuTicks()-c0) / 100
		lat := polls.latencies()
		log.Printf("approval answered to every agent %v after the first approval: answer after its approval p50 %s p99 %s max %s; %d poll answers; lpmos CPU %.2f s from the first approval to the last answer (%.0f µs per approval)",
			time.Since(t0).Round(time.Millisecond), ms(pct(lat, 0.5)), ms(pct(lat, 0.99)), ms(pct(lat, 1)), polls.requests.Load(), cpu, cpu*1e6/float64(len(agents)))
	}
	return c0, nil
}

// approvalPolls are the agents' held approval long-polls.
type approvalPolls struct {
	wg       sync.WaitGroup
	requests atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration
	err      error
}

// holdApprovalPolls starts every agent's approval long-poll, as
// agent/runner's waitApproval: GET approval?wait=30s again until the
// answer is approved with an install spec.
func holdApprovalPolls(p *proc, agents []*agent) *approvalPolls {
	ap := &approvalPolls{}
	for _, a := range agents {
		ap.wg.Go(func() {
			for {
				var ar wire.ApprovalResponse
				_, err := call(a.c, "GET", p.agentURL+wire.PathApproval+a.mac+"?wait=30s", a.session, nil, &ar)
				ap.requests.Add(1)
				ap.mu.Lock()
				switch {
				case err != nil:
					ap.err = fmt.Errorf("approval poll of %s: %w", a.mac, err)
				case ar.Approved && ar.Install != nil:
					ap.lat = append(ap.lat, time.Since(time.Unix(0, a.approvedAt.Load())))
				case ar.Status == wire.StatusFailed || ar.Status == wire.StatusCancelled:
					ap.err = fmt.Errorf("approval poll of %s: task %s (%s)", a.mac, ar.Status, ar.Reason)
				default:
					ap.mu.Unlock()
					continue
				}
				ap.mu.Unlock()
				return
			}
		})
	}
	return ap
}

func (ap *approvalPolls) wait(d time.Duration) error {
	done := make(chan struct{})
	go func() { ap.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		return fmt.Errorf("approval long-polls: not all answered within %v", d)
	}
	ap.mu.Lock()
	defer ap.mu.Unlock()
	return ap.err
}

func (ap *approvalPolls) latencies() []time.Duration {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	return slices.Clone(ap.lat)
}

var stages = []struct {
	name     string
	from, to float64
}{
	{wire.StagePartitioning, 0, 20}, {wire.StageDownloading, 20, 60}, {wire.StageInstalling, 60, 90},
	{wire.StageConfiguring, 90, 100}, {wire.StageCompleted, 100, 100},
}

func stageIdx(s string) int {
	for i, st := range stages {
		if st.name == s {
			return i
		}
	}
	return -1
}

// schedule is the report due at elapsed of an install lasting total:
// partitioning 5%, downloading 75%, installing 10%, configuring 10%.
func schedule(elapsed, total time.Duration) (string, int) {
	f := float64(elapsed) / float64(total)
	if f >= 1 {
		return wire.StageCompleted, 100
	}
	span := func(i int, lo, hi float64) (string, int) {
		st := stages[i]
		return st.name, int(st.from + (st.to-st.from)*(f-lo)/(hi-lo))
	}
	switch {
	case f < 0.05:
		return span(0, 0, 0.05)
	case f < 0.8:
		return span(1, 0.05, 0.8)
	case f < 0.9:
		return span(2, 0.8, 0.9)
	}
	return span(3, 0.9, 1)
}

// printSpread prints how evenly the reports were sent: per second, and the
// most in one 100 ms over the mean from second 5 on (the first seconds
// hold the approval's stage changes and the agents' switch to the
// interval the region asks for).
func printSpread(per100ms []atomic.Int64) {
	var b strings.Builder
	for sec := 0; sec+10 <= len(per100ms); sec += 10 {
		n := int64(0)
		for i := sec; i < sec+10; i++ {
			n += per100ms[i].Load()
		}
		fmt.Fprintf(&b, " %d", n)
	}
	fmt.Printf("reports sent per second:%s\n", b.String())
	var most, sum int64
	from := min(50, len(per100ms))
	for i := from; i < len(per100ms); i++ {
		n := per100ms[i].Load()
		most, sum = max(most, n), sum+n
	}
	if k := len(per100ms) - from; k > 0 && sum > 0 {
		mean := float64(sum) / float64(k)
		fmt.Printf("reports sent per 100 ms from second 5 on: mean %.0f, most %d (%.2fx the mean)\n", mean, most, float64(most)/mean)
	}
}

// dashboard is one /ws client counting messages and the lag of progress.
// A report's seq is the unix microsecond it was sent at, so the lag of a
// progress message is read from the message alone (no table of sends).
type dashboard struct {
	mu     sync.Mutex
	lags   []time.Duration
	counts map[string]int
	drops  int
	snaps  int
	// By second of the progress phase a report was sent in (from start):
	// its progress messages and those that came after more than 100 ms.
	start          time.Time
	bySec, slowSec map[int]int
}

// msgHead reads the type and, for progress, the seq of one hub message
// without decoding it (the generator shares the cores with lpmos): the
// hub writes "type" first; anything else is decoded.
func msgHead(data []byte) (typ []byte, seq int64, ok bool) {
	const pre = `{"type":"`
	if !bytes.HasPrefix(data, []byte(pre)) {
		return nil, 0, false
	}
	rest := data[len(pre):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil, 0, false
	}
	typ = rest[:end]
	if string(typ) != "progress" {
		return typ, 0, true
	}
	i := bytes.Index(rest, []byte(`"seq":`))
	if i < 0 {
		return nil, 0, false
	}
	num := rest[i+len(`"seq":`):]
	n := 0
	for n < len(num) && num[n] >= '0' && num[n] <= '9' {
		seq = seq*10 + int64(num[n]-'0')
		n++
	}
	return typ, seq, n > 0
}

func (d *dashboard) note(typ []byte, seq int64, now time.Time) {
	d.mu.Lock()
	d.counts[string(typ)]++ // no allocation for an existing key
	switch string(typ) {
	case "snapshot":
		d.snaps++
	case "progress":
		sent := time.UnixMicro(seq)
		lag := now.Sub(sent)
		d.lags = append(d.lags, lag)
		if !d.start.IsZero() && !sent.Before(d.start) {
			sec := int(sent.Sub(d.start) / time.Second)
			d.bySec[sec]++
			if lag > 100*time.Millisecond {
				d.slowSec[sec]++
			}
		}
	}
	d.mu.Unlock()
}

func (d *dashboard) run(ctx context.Context, p *proc, query string) {
	for ctx.Err() == nil {
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(p.url, "http")+"/ws"+query, &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + p.token}},
		})
		if err != nil {
			if ctx.Err() == nil {
				log.Printf("dashboard: dial: %v", err)
				time.Sleep(time.Second)
			}
			continue
		}
		ws.SetReadLimit(256 << 20)
		var buf bytes.Buffer
		for {
			_, r, err := ws.Reader(ctx)
			if err == nil {
				buf.Reset()
				_, err = buf.ReadFrom(r)
			}
			if err != nil {
				if ctx.Err() == nil {
					d.mu.Lock()
					d.drops++
					d.mu.Unlock()
					log.Printf("dashboard: connection ended (%v), reconnecting", err)
				}
				break
			}
			now := time.Now()
			data := buf.Bytes()
			if typ, seq, ok := msgHead(data); ok {
				d.note(typ, seq, now)
				continue
			}
			// Not one message starting with its type: decode it (a batch
			// of messages is an array).
			var ms []struct {
				Type string `json:"type"`
				Seq  int64  `json:"seq"`
			}
			if len(data) > 0 && data[0] != '[' {
				data = append(append([]byte{'['}, data...), ']')
			}
			_ = json.Unmarshal(data, &ms)
			for _, m := range ms {
				d.note([]byte(m.Type), m.Seq, now)
			}
		}
		ws.CloseNow()
	}
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)-1, int(float64(len(ds))*q))]
}

// selfCPU is the generator's own user+system time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "lpmos-fleet-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	p, err := start(o, dir)
	if err != nil {
		return err
	}
	defer p.stop()
	db0, rev0, rss0 := p.dbInUse(), p.metric("lpmos_etcd_revision"), p.rss()
	clients := make([]*http.Client, o.ips)
	for i := range clients {
		clients[i] = client(fmt.Sprintf("127.0.1.%d", 1+i%250), o.n/o.ips+2)
	}
	agents := make([]*agent, o.n)
	for i := range agents {
		agents[i] = &agent{i: i, mac: fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)), c: clients[i%len(clients)]}
	}
	approveCPU0, err := setup(o, p, agents)
	if err != nil {
		return err
	}
	if o.raw {
		for _, a := range agents { // the same source address as its net/http client's
			a.raw = &rawConn{src: fmt.Sprintf("127.0.1.%d", 1+a.i%len(clients)%250), addr: strings.TrimPrefix(p.agentURL, "http://")}
		}
	}

	d := &dashboard{counts: map[string]int{}, bySec: map[int]int{}, slowSec: map[int]int{}}
	dctx, dcancel := context.WithCancel(ctx)
	var dwg sync.WaitGroup
	dwg.Go(func() { d.run(dctx, p, "") })
	time.Sleep(time.Second) // the dashboard's snapshot
	if !o.cold {
		// A real agent reports progress on the keep-alive connection its
		// approval long-poll and install-spec fetch used; the setup above
		// ran 32 requests at a time, so without this every agent would
		// open its connection with its first report, all in the same
		// second (measured: every report of the first 4 s > 100 ms at the
		// client, none at the server's own request histogram).
		t0 := time.Now()
		var wwg sync.WaitGroup
		var werrs atomic.Int64
		for _, a := range agents {
			wwg.Go(func() {
				if a.raw != nil {
					a.req = appendRequest(a.req[:0], http.MethodGet, a.raw.addr, "/healthz", "", nil)
					if code, err := a.raw.do(a.req, &a.resp); err != nil || code != http.StatusOK {
						werrs.Add(1)
					}
					return
				}
				if _, err := get(a.c, p.agentURL+"/healthz", ""); err != nil {
					werrs.Add(1)
				}
			})
		}
		wwg.Wait()
		log.Printf("each agent holds a connection (%d failed) in %v", werrs.Load(), time.Since(t0).Round(time.Millisecond))
	}
	// The approval burst and its aftermath (the region's reaction, the
	// dashboard's snapshot, the connections above): lpmos's CPU until the
	// progress starts.
	cpuA := float64(p.cpuTicks()-approveCPU0) / 100
	log.Printf("lpmos CPU from the first approval to the start of the progress: %.2f s (%.0f µs per task)", cpuA, cpuA*1e6/float64(o.n))

	var (
		offered, achieved, errs, slowed atomic.Int64
		answered                        atomic.Int64 // every 2xx of the phase, after the window too
		lmu                             sync.Mutex
		lat                             = make([]time.Duration, 0, o.n*int(o.duration/time.Second+2))
		errSample                       atomic.Value
	)
	total := int(o.duration / time.Second)
	if db0 < 0 {
		db0 = 0
	}
	load0, _ := os.ReadFile("/proc/loadavg")
	alloc0, gc0 := p.metric("go_memstats_alloc_bytes_total"), p.metric("go_gc_duration_seconds_count")
	cpu0, self0, wall0 := p.cpuTicks(), selfCPU(), time.Now()
	log.Printf("progress starts at unix %.3f s", float64(wall0.UnixMicro())/1e6)
	d.mu.Lock()
	d.start = wall0
	d.mu.Unlock()
	var peak atomic.Int64
	sctx, scancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if r := p.rss(); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	end := wall0.Add(o.duration)
	// lpmos's CPU per 100 ms over the first 3 s (clock ticks of 10 ms).
	cpu100, cpu100done := make([]int64, 0, 30), make(chan struct{})
	go func() {
		defer close(cpu100done)
		prev := p.cpuTicks()
		for i := range cap(cpu100) {
			time.Sleep(time.Until(wall0.Add(time.Duration(i+1) * 100 * time.Millisecond)))
			c := p.cpuTicks()
			cpu100 = append(cpu100, c-prev)
			prev = c
		}
	}()
	var wg sync.WaitGroup
	// Per second of the run: reports sent, those slower than 100 ms, and
	// those that changed the stage (where the tail comes from).
	slowBySec := make([]struct{ n, slow, changes atomic.Int64 }, total+2)
	// Reports sent per 100 ms of the run: how evenly they are spread.
	per100ms := make([]atomic.Int64, 10*total)
	// The first 2 s by 100 ms of send: answers over 100 ms and the
	// slowest (where in the approval's wave the tail builds up).
	first100 := make([]struct{ slow, maxUS atomic.Int64 }, 20)
	for _, a := range agents {
		wg.Go(func() {
			next := wall0.Add(time.Duration(a.i) * time.Second / time.Duration(o.n)) // spread over the first second
			interval, longer := time.Second, 0
			seq := time.Now().UnixMicro()
			mine := make([]time.Duration, 0, total+2)
			last, lastPct := -1, 0
			for tries := 0; last < len(stages)-1 && tries < 15; {
				if !next.Before(end) {
					tries++ // after the window: finish the install, not counted
				}
				time.Sleep(time.Until(next))
				stage, percent := schedule(time.Since(wall0), o.duration)
				// Stages go forward one at a time, completed after configuring at 100.
				if i := stageIdx(stage); i > last+1 {
					stage, percent = stages[last+1].name, int(stages[last+1].from)
				}
				if stage == wire.StageCompleted && (last != len(stages)-2 || lastPct != 100) {
					stage, percent = wire.StageConfiguring, 100
				}
				if stageIdx(stage) == last {
					percent = max(percent, lastPct)
				}
				last0 := last
				t0 := time.Now()
				seq = max(seq+1, t0.UnixMicro()) // the send time: the dashboard's lag reads it
				nextMS, err := a.report(p.agentURL+wire.PathProgress, seq, stage, percent)
				el := time.Since(t0)
				counted := t0.Before(end)
				tick := int(t0.Sub(wall0) / (100 * time.Millisecond)) // the send's 100 ms of the run
				if counted {
					offered.Add(1)
					if tick >= 0 && tick < len(per100ms) {
						per100ms[tick].Add(1)
					}
				}
				if err != nil {
					errs.Add(1)
					errSample.Store(err.Error())
				} else {
					last, lastPct = stageIdx(stage), percent
					answered.Add(1)
					if counted {
						achieved.Add(1)
						mine = append(mine, el)
						if sec := int(t0.Sub(wall0) / time.Second); sec >= 0 && sec < len(slowBySec) {
							slowBySec[sec].n.Add(1)
							slow := el > 100*time.Millisecond
							if slow {
								slowBySec[sec].slow.Add(1)
							}
							if tick >= 0 && tick < len(first100) {
								if slow {
									first100[tick].slow.Add(1)
								}
								for us := el.Microseconds(); ; {
									m := first100[tick].maxUS.Load()
									if us <= m || first100[tick].maxUS.CompareAndSwap(m, us) {
										break
									}
								}
							}
							if stageIdx(stage) != last0 {
								slowBySec[sec].changes.Add(1)
							}
						}
					}
				}
				// As the agent (agent/install's tick): the next report the
				// asked interval (at least its own 1 s) after this one's
				// send. The region shifts each answer onto the task's
				// phase; an agent counts as slowed down once two answers
				// in a row ask for more than 1 s (one answer doing so is a
				// phase adjustment).
				interval = max(time.Second, time.Duration(nextMS)*time.Millisecond)
				if interval > time.Second {
					if longer++; longer == 2 {
						slowed.Add(1)
					}
				} else if longer < 2 {
					longer = 0
				}
				next = t0.Add(interval)
				// Ticks missed while a report was in flight count as offered
				// and not achieved: the agent fell behind.
				for time.Now().After(next.Add(interval)) && next.Before(end) {
					next = next.Add(interval)
					offered.Add(1)
				}
			}
			lmu.Lock()
			lat = append(lat, mine...)
			lmu.Unlock()
		})
	}
	wg.Wait()
	cpu1, self1, wall1 := p.cpuTicks(), selfCPU(), time.Now()
	alloc1, gc1 := p.metric("go_memstats_alloc_bytes_total"), p.metric("go_gc_duration_seconds_count")
	load1, _ := os.ReadFile("/proc/loadavg")
	scancel()
	time.Sleep(2 * time.Second) // the dashboard catches up
	dcancel()
	dwg.Wait()

	// Final state and storage.
	var list struct {
		Tasks []struct {
			Status struct{ Status string } `json:"status"`
		} `json:"tasks"`
	}
	ctl := &http.Client{Timeout: 120 * time.Second}
	// The full list is timed to its last byte (the server's answer) and,
	// separately, with this client's decoding of it (several MB of JSON for
	// 10,000 installed tasks).
	t0 := time.Now()
	body, err := get(ctl, p.url+"/api/v1/tasks", p.token)
	if err != nil {
		return err
	}
	listAll := time.Since(t0)
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("GET /api/v1/tasks: decode: %w", err)
	}
	listDecoded := time.Since(t0)
	completed := 0
	for _, t := range list.Tasks {
		if t.Status.Status == string(wire.StatusCompleted) {
			completed++
		}
	}
	var listFirst time.Duration
	if o.listPage > 0 {
		t0 = time.Now()
		if _, err := call(ctl, "GET", fmt.Sprintf("%s/api/v1/tasks?limit=%d", p.url, o.listPage), p.token, nil, nil); err == nil {
			listFirst = time.Since(t0)
		}
	}
	rss1 := p.rss()
	db1, rev1 := p.dbInUse(), p.metric("lpmos_etcd_revision")
	secs := wall1.Sub(wall0).Seconds()
	d.mu.Lock()
	lags := d.lags
	d.mu.Unlock()

	fmt.Printf("\nfleet: N=%d, %v of progress at 1/s\n", o.n, o.duration)
	fmt.Printf("load average: start %s; end %s\n", strings.TrimSpace(string(load0)), strings.TrimSpace(string(load1)))
	fmt.Printf("report latency: p50 %s  p99 %s  max %s (%d reports)\n", ms(pct(lat, 0.5)), ms(pct(lat, 0.99)), ms(pct(lat, 1)), len(lat))
	for sec := range slowBySec {
		if b := &slowBySec[sec]; b.slow.Load() > 0 {
			fmt.Printf("  second %2d: %d reports sent, %d stage changes, %d answered after more than 100 ms\n", sec, b.n.Load(), b.changes.Load(), b.slow.Load())
		}
	}
	var b strings.Builder
	for i := range first100 {
		fmt.Fprintf(&b, " %d/%.0f", first100[i].slow.Load(), float64(first100[i].maxUS.Load())/1000)
	}
	fmt.Printf("first 2 s by 100 ms of send, answers over 100 ms / slowest ms:%s\n", b.String())
	b.Reset()
	<-cpu100done
	for _, c := range cpu100 {
		fmt.Fprintf(&b, " %d", c*10)
	}
	fmt.Printf("lpmos CPU per 100 ms over the first 3 s, ms:%s\n", b.String())
	printSpread(per100ms)
	var early, earlyN, later, laterN int64
	for sec := range slowBySec {
		b := &slowBySec[sec]
		if sec < 5 {
			early, earlyN = early+b.slow.Load(), earlyN+b.n.Load()
		} else {
			later, laterN = later+b.slow.Load(), laterN+b.n.Load()
		}
	}
	fmt.Printf("answered after more than 100 ms: %d of %d reports in seconds 0-4 (the approval's stage changes), %d of %d from second 5 on\n", early, earlyN, later, laterN)
	fmt.Printf("achieved/offered: %d/%d = %.2f  errors %d (%v)  agents slowed down: %d\n", achieved.Load(), offered.Load(),
		float64(achieved.Load())/float64(max(1, offered.Load())), errs.Load(), errSample.Load(), slowed.Load())
	lpmosCPU := time.Duration(cpu1-cpu0) * 10 * time.Millisecond // clock ticks of 10 ms
	fmt.Printf("lpmos CPU: %.0f%% of one core, %.0f µs per answered report (%d)  RSS: %d MiB before, %d MiB peak, %d MiB after\n",
		float64(cpu1-cpu0)/secs, float64(lpmosCPU.Microseconds())/float64(max(1, answered.Load())), answered.Load(), rss0>>20, max(peak.Load(), rss1)>>20, rss1>>20)
	// Load-robust (issue 14, wave10): what lpmos allocated per report and
	// how many collections that cost (/metrics' Go collector).
	fmt.Printf("lpmos allocated %.1f KiB per answered report; %d GC cycles in the progress\n",
		float64(alloc1-alloc0)/1024/float64(max(1, answered.Load())), gc1-gc0)
	fmt.Printf("load generator CPU: %.0f%% of one core, %.0f µs per answered report (agents and dashboard)\n",
		100*(self1-self0).Seconds()/secs, float64((self1-self0).Microseconds())/float64(max(1, answered.Load())))
	fmt.Printf("etcd in use: %.1f -> %.1f MiB, %.1f KiB and %.1f revisions per install (no compaction); completed %d/%d\n",
		float64(db0)/(1<<20), float64(db1)/(1<<20), float64(db1-db0)/1024/float64(o.n), float64(rev1-rev0)/float64(o.n), completed, o.n)
	fmt.Printf("dashboard: %d progress messages for %d reports (%.2f); lag p50 %s p99 %s; drops %d; snapshots %d; by type %v\n",
		d.counts["progress"], len(lat), float64(d.counts["progress"])/float64(max(1, len(lat))), ms(pct(lags, 0.5)), ms(pct(lags, 0.99)), d.drops, d.snaps, d.counts)
	d.mu.Lock()
	for sec := range total + 2 {
		if n := d.slowSec[sec]; n > 0 {
			fmt.Printf("  second %2d: %d progress messages for reports sent then, %d after more than 100 ms\n", sec, d.bySec[sec], n)
		}
	}
	d.mu.Unlock()
	fmt.Printf("GET /api/v1/tasks: all %d tasks %s to the last byte (%d KiB), %s decoded; first page (limit=%d) %s\n",
		len(list.Tasks), ms(listAll), len(body)>>10, ms(listDecoded), o.listPage, ms(listFirst))
	fmt.Printf("| %d | %s | %s | %s | %.0f%% | %.0f µs | %.0f µs | %d MiB | %.2f | %.1f KiB | %.2f | %s | %d (%d) |\n", o.n, strings.Fields(string(load0))[0], ms(pct(lat, 0.5)), ms(pct(lat, 0.99)),
		float64(cpu1-cpu0)/secs, float64(lpmosCPU.Microseconds())/float64(max(1, answered.Load())), float64((self1-self0).Microseconds())/float64(max(1, answered.Load())), rss1>>20, float64(achieved.Load())/float64(max(1, offered.Load())),
		float64(db1-db0)/1024/float64(o.n), float64(d.counts["progress"])/float64(max(1, len(lat))), ms(pct(lags, 0.99)), d.drops, d.snaps-1)
	if completed != o.n {
		return errors.New("not every task completed")
	}
	return nil
}
