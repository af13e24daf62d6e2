package ui_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	neturl "net/url"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/testenv"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// The WebSocket latency benchmark runs its N clients in a child process (this
// test binary, re-executed), so the RSS it reports for lpmos — the parent:
// embedded etcd, control plane, hub and the server side of every connection —
// is not inflated by the clients. The child reports its own RSS separately.
//
//	go test -run '^$' -bench BenchmarkWSLatency -benchtime 200x ./ui/
const benchChildEnv = "LPMOS_WSBENCH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) != "" {
		if err := benchClients(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	flag.Parse()
	testenv.ParallelAtLeast(4) // most tests wait on etcd; the browser tests take turns (newBrowser)
	pool, err := newBrowserPool()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	browsers = pool
	code := m.Run()
	browsers.close()
	os.Exit(code)
}

func BenchmarkWSLatency(b *testing.B) {
	sizes := []int{1000, 10000}
	if env := os.Getenv("LPMOS_WSBENCH_CLIENTS"); env != "" { // e.g. "1,100,1000"
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("LPMOS_WSBENCH_CLIENTS: bad count %q", f)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchWSLatency(b, n) })
	}
}

func benchWSLatency(b *testing.B, n int) {
	if err := raiseNoFile(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	e := newLiveOn(b, storetest.New(b))
	task, sess := approvedWithSession(b, ctx, e.store, "52:54:00:be:00:01")
	// The progress event is an agent's within-stage report taken the way
	// the agent API takes it (store.ProgressPath: checked against the
	// region's cache, published to the hub at once, written coalesced);
	// LPMOS_WSBENCH_PATH=authoritative times the store's read-check-write
	// path instead (the hub then hears of it from etcd's watch).
	var seq int64 // the last report's seq
	report := func(p wire.Progress) error {
		_, err := e.store.ReportProgress(ctx, task.ID, p)
		return err
	}
	if os.Getenv("LPMOS_WSBENCH_PATH") != "authoritative" {
		pp := storetest.RunProgressPath(b, e.store, 0, store.DefaultPersistInterval)
		report = func(p wire.Progress) error {
			if _, err := pp.Report(ctx, task.ID, sess, "", p); err != nil {
				return fmt.Errorf("progress path: %w", err)
			}
			return nil
		}
		// The run's first report is partitioning, then the move to
		// downloading (stage changes: written at once); the timed ones
		// are within downloading.
		for i, st := range []string{wire.StagePartitioning, wire.StageDownloading} {
			seq++
			if err := report(wire.Progress{Seq: seq, Stage: st, Percentage: 20 * i}); err != nil {
				b.Fatal(err)
			}
		}
		if err := pp.WaitWritten(ctx, task.ID); err != nil {
			b.Fatal(err)
		}
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"=1", "LPMOS_WSBENCH_URL="+e.url, "LPMOS_WSBENCH_TOKEN="+e.token,
		"LPMOS_WSBENCH_N="+strconv.Itoa(n), "LPMOS_WSBENCH_CHILDPROF="+os.Getenv("LPMOS_WSBENCH_CHILDPROF"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// Dialing 10,000 clients on a loaded 2-core box takes minutes.
	wait := 120*time.Second + time.Duration(n)*30*time.Millisecond
	expect := func(prefix string) string {
		b.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					b.Fatalf("bench child ended while waiting for %q", prefix)
				}
				if rest, ok := strings.CutPrefix(l, prefix); ok {
					return rest
				}
			case <-time.After(wait):
				b.Fatalf("bench child: no %q within %s", prefix, wait)
			}
		}
	}
	expect("ready")
	serverRSS := rssKiB()
	clients := e.srv.Hub().Stats().Clients
	if clients != n {
		b.Fatalf("hub has %d clients, want %d", clients, n)
	}

	// An in-process subscriber times the hub's side: the progress
	// message reaches it when the hub queues it for the clients (it is
	// one of them, at a random place in the fan-out order, and its pump
	// goroutine adds a hand-over).
	hubSub, err := e.srv.Hub().Subscribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer e.srv.Hub().Unsubscribe(hubSub)
	var hubLats []int64
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		for {
			var m []byte
			select {
			case m = <-hubSub.C:
			case <-hubSub.Done():
				return
			}
			now := time.Now().UnixNano()
			if bytes.HasPrefix(m, []byte(`{"type":"progress"`)) {
				if t0 := jsonInt(m, `"message":"t0=`); t0 > 0 {
					hubLats = append(hubLats, now-t0)
				}
			}
		}
	}()

	cpu0 := cpuTime()
	first := seq // the timed reports follow the set-up's
	for b.Loop() {
		seq++
		msg := "t0=" + strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := report(wire.Progress{Seq: seq, Stage: wire.StageDownloading,
			Percentage: 20 + int(min(seq, 40)), Message: msg, BytesDone: seq << 20, BytesTotal: 1 << 40}); err != nil {
			b.Fatal(err)
		}
		if got := expect("ack "); got != strconv.FormatInt(seq, 10) {
			b.Fatalf("ack %s, want %d", got, seq)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	events := seq - first
	if _, err := io.WriteString(stdin, "done\n"); err != nil {
		b.Fatal(err)
	}
	var res benchResult
	if err := json.Unmarshal([]byte(expect("result ")), &res); err != nil {
		b.Fatal(err)
	}
	if want := int(events) * n; res.Count != want {
		b.Fatalf("child measured %d deliveries, want %d", res.Count, want)
	}
	e.srv.Hub().Unsubscribe(hubSub)
	<-hubDone
	slices.Sort(hubLats)
	if len(hubLats) > 0 {
		b.ReportMetric(float64(hubLats[len(hubLats)/2])/1e6, "hub-p50-ms")
	}
	if res.Wakeups > 0 {
		b.ReportMetric(float64(res.Wakeups)/float64(events*int64(n)), "client-wakeups/delivery")
	}
	b.ReportMetric(res.FirstP50Ms, "first-client-p50-ms")
	b.ReportMetric(res.LastP50Ms, "last-client-p50-ms")
	if d := e.srv.Hub().Stats().Dropped; d != 0 {
		b.Fatalf("%d clients dropped", d)
	}
	// lpmos's CPU (this process: etcd, hub, server side of every
	// connection) per delivered message: what a busy box cannot hide.
	b.ReportMetric(float64(cpu.Microseconds())/float64(events*int64(n)), "lpmos-cpu-us/delivery")
	// The clients' CPU per delivery: the other half of what the box
	// spends (a real WebSocket client parsing every frame).
	b.ReportMetric(float64(res.CPUNs)/1e3/float64(events*int64(n)), "clients-cpu-us/delivery")
	b.ReportMetric(res.P50Ms, "p50-ms")
	b.ReportMetric(res.P99Ms, "p99-ms")
	b.ReportMetric(res.MaxMs, "max-ms")
	b.ReportMetric(float64(serverRSS)/1024, "lpmos-RSS-MiB")
	b.ReportMetric(float64(res.RSSKiB)/1024, "clients-RSS-MiB")
}

type benchResult struct {
	P50Ms, P99Ms, MaxMs float64
	Count               int
	RSSKiB              int64
	CPUNs               int64 // the clients' CPU from "ready" to "done"
	Wakeups             int64 // the lean clients' epoll_wait calls that returned events
	// Medians over the events of the latency of its first and of its
	// last client.
	FirstP50Ms, LastP50Ms float64
}

// seqStat is one event as the clients saw it.
type seqStat struct {
	t0          int64
	n           atomic.Int64
	first, last atomic.Int64 // the earliest and the latest read
}

func (s *seqStat) seen(now int64) {
	for f := s.first.Load(); (f == 0 || now < f) && !s.first.CompareAndSwap(f, now); f = s.first.Load() {
	}
	for l := s.last.Load(); now > l && !s.last.CompareAndSwap(l, now); l = s.last.Load() {
	}
}

// leanClients opens n lean clients (ui/ws_benchclient_test.go) on 2
// epoll loops (LPMOS_WSBENCH_LOOPS) and returns once all have their
// snapshot.
func leanClients(n int, base, token string, onText func(c *rawWSClient, payload []byte, now int64)) (*rawWSClients, error) {
	u, err := neturl.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("LPMOS_WSBENCH_URL: %w", err)
	}
	addr, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("LPMOS_WSBENCH_URL: %w", err)
	}
	loops := 2
	if v, err := strconv.Atoi(os.Getenv("LPMOS_WSBENCH_LOOPS")); err == nil && v > 0 {
		loops = v
	}
	r, err := newRawWSClients(loops, onText)
	if err != nil {
		return nil, err
	}
	if v, err := time.ParseDuration(os.Getenv("LPMOS_WSBENCH_NAP")); err == nil {
		r.nap = v
	}
	r.clients = make([]*rawWSClient, n)
	for i := range r.clients {
		r.clients[i] = &rawWSClient{fd: -1}
	}
	var wg sync.WaitGroup
	errc := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := r.dial(i, addr, "/ws", token, r.clients[i]); err != nil {
				errc <- fmt.Errorf("dial %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		r.close()
		return nil, err
	default:
	}
	return r, nil
}

// libClients opens n coder/websocket clients, each read by its goroutine,
// and returns once all have their snapshot.
func libClients(ctx context.Context, n int, url string, hdr http.Header, onMessage func(i int, data []byte, now int64), errc chan error) (func(), error) {
	var readers, wg sync.WaitGroup
	// A client reads from the moment it has its snapshot (it answers the
	// server's pings meanwhile: dialing 10,000 clients takes a while).
	// Reads take a context without Done (the library arms no
	// context.AfterFunc per message; closing the connection ends them)
	// and reuse one buffer per client: the library still parses every
	// frame, as a browser does.
	noDone := context.WithoutCancel(ctx)
	read := func(i int, c *websocket.Conn) {
		defer readers.Done()
		buf := make([]byte, 0, 1024)
		for {
			_, r, err := c.Reader(noDone)
			if err != nil {
				return
			}
			data, err := readAllInto(buf[:0], r)
			if err != nil {
				return
			}
			buf = data
			onMessage(i, data, time.Now().UnixNano())
		}
	}
	conns := make([]*websocket.Conn, n)
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
			if err != nil {
				errc <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			c.SetReadLimit(16 << 20)
			if _, _, err := c.Read(ctx); err != nil { // the snapshot
				errc <- fmt.Errorf("snapshot %d: %w", i, err)
				return
			}
			conns[i] = c
			readers.Add(1)
			go read(i, c)
		}()
	}
	wg.Wait()
	return func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
		readers.Wait()
	}, nil
}

// benchClients is the child: it opens N authenticated /ws connections,
// says "ready", then for every progress message records the latency from
// the t0 in its text (wall clock, same host) and prints "ack <seq>" once
// all N clients have it. On "done" it prints the percentiles and its CPU
// time. LPMOS_WSBENCH_CHILDPROF=FILE writes its CPU profile there.
func benchClients(ctx context.Context, in io.Reader, out io.Writer) error {
	if err := raiseNoFile(); err != nil {
		return err
	}
	n, err := strconv.Atoi(os.Getenv("LPMOS_WSBENCH_N"))
	if err != nil {
		return fmt.Errorf("LPMOS_WSBENCH_N: %w", err)
	}
	url := "ws" + strings.TrimPrefix(os.Getenv("LPMOS_WSBENCH_URL"), "http") + "/ws"
	hdr := http.Header{"Authorization": {"Bearer " + os.Getenv("LPMOS_WSBENCH_TOKEN")}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		outMu sync.Mutex
		acks  sync.Map // seq -> *seqStat
		lats  = make([][]int64, n)
		errc  = make(chan error, n)
	)
	// onMessage handles client i's text message data, read at now (client
	// i's messages are handled by one goroutine at a time).
	onMessage := func(i int, data []byte, now int64) {
		// Cheap field extraction keeps the clients' CPU (which
		// shares the box with lpmos) low: {"type":"progress",...
		// "message":"t0=<ns>","seq":<n>,...}.
		if !bytes.HasPrefix(data, []byte(`{"type":"progress"`)) {
			return
		}
		t0 := jsonInt(data, `"message":"t0=`)
		seq := jsonInt(data, `"seq":`)
		if t0 <= 0 || seq <= 0 {
			return
		}
		lats[i] = append(lats[i], now-t0)
		v, ok := acks.Load(seq)
		if !ok {
			v, _ = acks.LoadOrStore(seq, &seqStat{t0: t0})
		}
		st := v.(*seqStat)
		st.seen(now)
		if st.n.Add(1) == int64(n) {
			outMu.Lock()
			fmt.Fprintf(out, "ack %d\n", seq)
			outMu.Unlock()
		}
	}
	var closeAll func()
	waits := func() int64 { return 0 }
	if os.Getenv("LPMOS_WSBENCH_CLIENT") == "lib" {
		closeAll, err = libClients(ctx, n, url, hdr, onMessage, errc)
	} else {
		var r *rawWSClients
		r, err = leanClients(n, os.Getenv("LPMOS_WSBENCH_URL"), os.Getenv("LPMOS_WSBENCH_TOKEN"), func(c *rawWSClient, data []byte, now int64) {
			onMessage(c.i, data, now)
		})
		if err == nil {
			closeAll, waits = r.close, r.waits.Load
		}
	}
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	if path := os.Getenv("LPMOS_WSBENCH_CHILDPROF"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("child profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("child profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, waits0 := cpuTime(), waits()
	outMu.Lock()
	fmt.Fprintln(out, "ready")
	outMu.Unlock()

	sc := bufio.NewScanner(in)
	for sc.Scan() && sc.Text() != "done" {
	}
	cpu, nwaits := cpuTime()-cpu0, waits()-waits0
	rss := rssKiB()
	cancel()
	closeAll()
	var all []int64
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	res := benchResult{Count: len(all), RSSKiB: rss, CPUNs: cpu.Nanoseconds(), Wakeups: nwaits}
	if len(all) > 0 {
		ms := func(q float64) float64 { return float64(all[min(len(all)-1, int(q*float64(len(all))))]) / 1e6 }
		res.P50Ms, res.P99Ms, res.MaxMs = ms(0.50), ms(0.99), float64(all[len(all)-1])/1e6
	}
	// Per event: when its first and its last client had it.
	var firsts, lasts []int64
	acks.Range(func(_, v any) bool {
		st := v.(*seqStat)
		firsts, lasts = append(firsts, st.first.Load()-st.t0), append(lasts, st.last.Load()-st.t0)
		return true
	})
	slices.Sort(firsts)
	slices.Sort(lasts)
	if len(firsts) > 0 {
		res.FirstP50Ms, res.LastP50Ms = float64(firsts[len(firsts)/2])/1e6, float64(lasts[len(lasts)/2])/1e6
	}
	data, _ := json.Marshal(res)
	outMu.Lock()
	defer outMu.Unlock()
	_, err = fmt.Fprintf(out, "result %s\n", data)
	return err
}

// readAllInto is io.ReadAll into buf's storage.
func readAllInto(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// jsonInt returns the decimal integer that follows key in data, or -1.
func jsonInt(data []byte, key string) int64 {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return -1
	}
	var v int64 = -1
	for _, c := range data[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		v = max(v, 0)*10 + int64(c-'0')
	}
	return v
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssKiB reads this process's resident set size from /proc/self/status.
func rssKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return -1
}

// raiseNoFile lifts the open-file soft limit to the hard limit: 10,000
// connections need 10,000 descriptors on each side.
func raiseNoFile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
		}
	}
	return nil
}
