// Command rss measures what an idle `lpmos serve` holds with a given data
// dir (BENCHMARKS.md, "RSS with 10,000 tasks"): it copies the data dir,
// serves the copy (control plane only, plain HTTP, loopback only), and
// prints VmRSS (anonymous and file-backed: etcd's bbolt file is mapped
// into the process) at each sample time, and lpmos's Go heap from
// /metrics. With -profile it also saves a heap profile (after a GC) from
// --pprof-addr.
//
//	go run ./bench/fleet -n 10000 -duration 5s -keep   # prints the data dir
//	go run ./bench/rss -data /tmp/lpmos-fleet-NNN/data
//	go run ./bench/rss -data DIR -serve-args=--memory-limit=128MiB -at 30s,90s,720s
//	go run ./bench/rss -data DIR -at 60s,90s,330s,400s -log lpmos.log   # past the first compaction (5 min)
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lpmos/lpmos/bench/internal/procstat"
)

func main() {
	data := flag.String("data", "", "data dir to serve a copy of (required)")
	bin := flag.String("lpmos", "", "lpmos binary (default: go build . into a temp dir)")
	samples := flag.String("at", "30s,60s,90s", "when to read the RSS, after start")
	profile := flag.String("profile", "", "save a heap profile (after a GC) here at the end")
	role := flag.String("role", "control-plane", "lpmos serve --role (all: the region too, every listener on loopback)")
	extra := flag.String("serve-args", "", "extra `lpmos serve` flags, space separated (e.g. --memory-limit=160MiB)")
	keepLog := flag.String("log", "", "copy lpmos's log here at the end (e.g. to read its defrags)")
	flag.Parse()
	if *data == "" {
		log.Fatal("-data is required")
	}
	if err := run(*data, *bin, *samples, *profile, *role, *keepLog, strings.Fields(*extra)); err != nil {
		log.Fatal(err)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func run(src, bin, samples, profile, role, keepLog string, extra []string) error {
	dir, err := os.MkdirTemp("", "lpmos-rss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "lpmos")
		b := exec.Command("go", "build", "-o", bin, ".")
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("build lpmos (run from the repository root, or pass -lpmos): %w", err)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.Command("cp", "-a", src, data).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %v: %s", src, err, out)
	}
	_ = os.Remove(filepath.Join(data, "lpmos.lock"))
	cp, pp := procstat.FreePort(), procstat.FreePort()
	url := fmt.Sprintf("http://127.0.0.1:%d", cp)
	logf, err := os.Create(filepath.Join(dir, "lpmos.log"))
	if err != nil {
		return err
	}
	args := []string{"serve", "--role=" + role, "--data-dir", data, "--tls=off",
		"--listen-addr", fmt.Sprintf("127.0.0.1:%d", cp),
		"--etcd-client-url", fmt.Sprintf("https://127.0.0.1:%d", procstat.FreePort()),
		"--etcd-peer-url", fmt.Sprintf("https://127.0.0.1:%d", procstat.FreePort()),
		"--pprof-addr", fmt.Sprintf("127.0.0.1:%d", pp)}
	if role != "control-plane" { // the region's listeners, loopback only
		args = append(args, "--api-port", fmt.Sprint(procstat.FreePort()), "--api-bind", "127.0.0.1", "--advertise-ip", "127.0.0.1", "--agent-tls", "off",
			"--dhcp-addr", fmt.Sprintf("127.0.0.1:%d", procstat.FreePort()),
			"--pxe-addr", fmt.Sprintf("127.0.0.1:%d", procstat.FreePort()),
			"--tftp-addr", fmt.Sprintf("127.0.0.1:%d", procstat.FreePort()))
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	load, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start lpmos: %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if keepLog != "" {
			if out, err := exec.Command("cp", logf.Name(), keepLog).CombinedOutput(); err != nil {
				log.Printf("copy the log: %v: %s", err, out)
			}
		}
	}()
	pid := cmd.Process.Pid
	fmt.Printf("rss: %s served by %s, load average before: %s", src, bin, load)
	var (
		last             map[string]int64
		cpu0, gc0, first = 0.0, 0.0, true
		cpu1, gc1        float64
	)
	for _, s := range strings.Split(samples, ",") {
		at, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-at %q: %w", s, err)
		}
		time.Sleep(time.Until(start.Add(at)))
		if cmd.ProcessState != nil {
			return fmt.Errorf("lpmos exited (log: %s)", logf.Name())
		}
		last = procstat.Status(pid, "VmRSS", "RssAnon", "RssFile", "VmHWM")
		load, _ := os.ReadFile("/proc/loadavg")
		// CPU and GC cycles so far: what the idle process spends between
		// the first sample and the last (e.g. with --memory-limit).
		cpu1, gc1 = procstat.Metric(url, "process_cpu_seconds_total"), procstat.Metric(url, "go_gc_duration_seconds_count")
		if first {
			cpu0, gc0, first = cpu1, gc1, false
		}
		fmt.Printf("+%-4s VmRSS %s (anonymous %s, file %s), peak %s; CPU %.2f s, %.0f GCs; load %s", s, mib(last["VmRSS"]), mib(last["RssAnon"]), mib(last["RssFile"]), mib(last["VmHWM"]), cpu1, gc1, load)
	}
	fmt.Printf("from the first sample to the last: %.2f s of CPU, %.0f GCs\n", cpu1-cpu0, gc1-gc0)
	if files, err := fileRSS(pid); err == nil {
		fmt.Printf("file-backed RSS by file (/proc/%d/smaps): %s\n", pid, files)
	}
	fmt.Printf("Go heap: %.1f MiB allocated, %.1f MiB from the OS (go_memstats_heap_alloc_bytes, _heap_sys_bytes)\n",
		procstat.Metric(url, "go_memstats_heap_alloc_bytes")/(1<<20), procstat.Metric(url, "go_memstats_heap_sys_bytes")/(1<<20))
	if profile != "" {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pp))
		if err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
		defer resp.Body.Close()
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Printf("heap profile (after a GC): go tool pprof -top -inuse_space %s %s\n", bin, profile)
	}
	fmt.Printf("| %s | %s | %s | %s |\n", mib(last["VmRSS"]), mib(last["RssAnon"]), mib(last["RssFile"]), mib(last["VmHWM"]))
	return nil
}

// fileRSS sums the resident pages of pid's file mappings per file (the
// lpmos binary, etcd's db file, libc), largest first.
func fileRSS(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return "", err
	}
	sums := map[string]int64{}
	var name string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			name = ""
			if len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				name = f[5]
			}
		case len(f) == 3 && f[0] == "Rss:" && name != "":
			var kib int64
			fmt.Sscan(f[1], &kib)
			sums[name] += kib
		}
	}
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return sums[names[i]] > sums[names[j]] })
	var out []string
	for _, n := range names {
		if sums[n] >= 1024 {
			out = append(out, fmt.Sprintf("%s %s", filepath.Base(n), mib(sums[n])))
		}
	}
	return strings.Join(out, ", "), nil
}
