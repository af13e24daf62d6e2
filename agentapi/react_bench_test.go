package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// BenchmarkApprovalBurst is the region's reaction to a burst of
// approvals (the fleet's approval phase): LPMOS_BURST_TASKS tasks (default
// 2,000) wait for their approval with a readable image; all are approved
// at once (32 at a time, as bench/fleet); the burst ends when the sync
// loop has reacted to the last approval (a sentinel task approved last,
// whose image is missing, is failed by it). Reported: the process's CPU
// per approval (the store's approvals, the same on every build, included)
// and the wall time. With LPMOS_BURST_POLLS=1 every task's agent also holds
// its approval long-poll (?wait=30s) from before the burst until it is
// answered, as agent/runner does.
//
//	go test -run '^$' -bench BenchmarkApprovalBurst -benchtime 1x ./agentapi/
func BenchmarkApprovalBurst(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("LPMOS_BURST_TASKS")); err == nil && v > 0 {
		n = v
	}
	polls := os.Getenv("LPMOS_BURST_POLLS") == "1"
	for range b.N {
		b.StopTimer()
		st := storetest.New(b)
		ctx := context.Background()
		r := newRegionB(b, st)
		addImageB(b, st, "ubuntu", "22.04")
		ids := make([]string, n)
		macs := make([]string, n)
		for i := range n {
			task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: nextMAC(), OSType: "ubuntu", OSVersion: "22.04"})
			if err != nil {
				b.Fatal(err)
			}
			ids[i], macs[i] = task.ID, task.Spec.TargetMAC
		}
		sentinel, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: nextMAC(), OSType: "none", OSVersion: "1"})
		if err != nil {
			b.Fatal(err)
		}
		all := append(ids[:n:n], sentinel.ID)
		parallelB(b, len(all), 32, func(i int) error {
			if _, err := st.ClaimTask(ctx, all[i], ""); err != nil && !errors.Is(err, store.ErrConflict) { // or the region claimed it
				return err
			}
			_, err := st.SetHardware(ctx, all[i], wire.Hardware{BootMode: "bios"})
			return err
		})
		var answered chan error
		if polls {
			answered = make(chan error, n)
			for i, id := range ids {
				tok, err := sessionForB(st, id)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					var ar wire.ApprovalResponse
					code, err := callB(r.srv.URL+wire.PathApproval+macs[i]+"?wait=30s", tok, &ar)
					if err == nil && (code != 200 || !ar.Approved) {
						err = fmt.Errorf("approval poll: %d %+v", code, ar)
					}
					answered <- err
				}()
			}
			time.Sleep(time.Second) // the polls are held
		}
		runtime.GC()
		b.StartTimer()
		cpu0, wall0 := cpuSelf(), time.Now()
		parallelB(b, n, 32, func(i int) error {
			_, err := st.Transition(ctx, ids[i], wire.StatusApproved, "operator")
			return err
		})
		if _, err := st.Transition(ctx, sentinel.ID, wire.StatusApproved, "operator"); err != nil {
			b.Fatal(err)
		}
		for {
			got, err := st.GetTask(ctx, sentinel.ID)
			if err != nil {
				b.Fatal(err)
			}
			if got.Status.Status == wire.StatusFailed {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if polls {
			for range n {
				if err := <-answered; err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		cpu := cpuSelf() - cpu0
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/approval")
		b.ReportMetric(float64(time.Since(wall0).Milliseconds()), "ms/burst")
	}
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRegion is a started region of id dc1 on st, served over HTTP
// (self-contained, so that the benchmark runs on an older tree too).
type benchRegion struct {
	*Region
	srv *httptest.Server
}

func newRegionB(b *testing.B, st *store.Store) *benchRegion {
	b.Helper()
	var h atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.Load().(http.Handler).ServeHTTP(w, r) }))
	b.Cleanup(srv.Close)
	boot := b.TempDir()
	for name, data := range map[string]string{"vmlinuz": "KERNEL", "initramfs.img": "INITRAMFS"} {
		if err := os.WriteFile(filepath.Join(boot, name), []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	r, err := New(Config{Store: st, RegionID: "dc1", PublicURL: srv.URL, BootDir: boot, PollInterval: DefaultPollInterval,
		Images: imagesrc.Policy{Dir: os.TempDir(), AllowLocalURLs: true}})
	if err != nil {
		b.Fatal(err)
	}
	h.Store(r.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Start(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	for r.State()[ServiceTaskSync].State != StateRunning {
		time.Sleep(10 * time.Millisecond)
	}
	return &benchRegion{Region: r, srv: srv}
}

func addImageB(b *testing.B, st *store.Store, osType, version string) {
	b.Helper()
	data := []byte("image")
	path := filepath.Join(b.TempDir(), osType+"-"+version+".img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if err := st.PutImage(context.Background(), store.Image{OSType: osType, OSVersion: version, Source: path, Format: "raw",
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), FileSize: int64(len(data))}); err != nil {
		b.Fatal(err)
	}
}

func sessionForB(st *store.Store, id string) (string, error) {
	ctx := context.Background()
	boot, err := st.IssueBootToken(ctx, id, time.Minute)
	if err != nil {
		return "", err
	}
	sess, _, err := st.RedeemBootToken(ctx, id, boot, "192.0.2.1:1")
	return sess, err
}

func callB(url, token string, out any) (int, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

// parallelB runs f(0..n-1), par at a time.
func parallelB(b *testing.B, n, par int, f func(i int) error) {
	b.Helper()
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
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
					first = err
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}
