package store_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// BenchmarkProgressStageWaves is the fleet's stage-change waves on the
// progress path alone (issue 14): n agents (LPMOS_WAVE_AGENTS, default
// 500) each report the next stage at the same moment, five times
// (partitioning with the move to installing, downloading, installing,
// configuring, completed with the move to completed), with two
// store.Watch consumers (LPMOS_WAVE_WATCHERS) draining the changes as a
// dashboard hub would (LPMOS_WAVE_STATUS_ONLY: WatchStored consumers of
// statuses only, as the task metrics), and one WatchStored consumer of the
// stored reports: a wave starts once the previous one is stored (as in the
// fleet, where waves are a report interval apart). It reports the process's CPU per report (embedded etcd
// included: the load-robust figure), the process's allocations per report
// (also load-robust), the wall time of a wave until all its reports are
// stored (ms/wave, seen by the first watcher), and the agent's answer time
// (what it waits for) as p50/p99 of the four stage-change waves (p50-ms,
// p99-ms) and of the final wave (final-p50-ms, final-p99-ms: the final
// report is always answered after its commit). Run it with -benchtime 1x.
func BenchmarkProgressStageWaves(b *testing.B) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("LPMOS_WAVE_AGENTS")); err == nil && v > 0 {
		n = v
	}
	s := storetest.New(b)
	ctx := context.Background()
	type agent struct {
		id, tok string
	}
	agents := make([]agent, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range agents {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			task, tok := agentSession(b, ctx, s, fmt.Sprintf("02:01:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)))
			agents[i] = agent{task.ID, tok}
		})
	}
	wg.Wait()
	pp := storetest.RunProgressPath(b, s, 0, time.Hour)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchers := 2 // LPMOS_WAVE_WATCHERS: how many store.Watch consumers drain the changes
	if v, err := strconv.Atoi(os.Getenv("LPMOS_WAVE_WATCHERS")); err == nil && v >= 0 {
		watchers = v
	}
	filtered := os.Getenv("LPMOS_WAVE_STATUS_ONLY") != "" // the consumers as the task metrics: statuses only
	for range watchers {
		ch := s.Watch(wctx, 0)
		if filtered {
			ch = s.WatchStored(wctx, 0, store.KindTaskCreated, store.KindTaskDeleted, store.KindStatus)
		}
		go func() {
			for range ch {
			}
		}()
	}
	// One more consumer counts the stored reports of each wave (by seq;
	// stored ones only: Watch leaves out a stored report it had live).
	var (
		smu    sync.Mutex
		stored = map[int64]int{}
		wrote  = map[int64]chan struct{}{}
	)
	counted := s.WatchStored(wctx, 0, store.KindProgress)
	go func() {
		for c := range counted {
			smu.Lock()
			stored[c.Progress.Seq]++
			if stored[c.Progress.Seq] == n && wrote[c.Progress.Seq] != nil {
				close(wrote[c.Progress.Seq])
			}
			smu.Unlock()
		}
	}()
	waves := []struct {
		stage string
		pct   int
	}{{wire.StagePartitioning, 0}, {wire.StageDownloading, 20}, {wire.StageInstalling, 60}, {wire.StageConfiguring, 90}, {wire.StageCompleted, 100}}
	b.ResetTimer() // b.N is ignored (the waves need fresh tasks): -benchtime 1x
	var lat, finalLat []time.Duration
	var lmu sync.Mutex
	if path := os.Getenv("LPMOS_WAVE_PROFILE"); path != "" { // the waves only, not the setup
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	writeAllocs := func(suffix string) { // LPMOS_WAVE_PROFILE.allocs-{before,after}: compare with pprof -diff_base
		if path := os.Getenv("LPMOS_WAVE_PROFILE"); path != "" {
			f, err := os.Create(path + ".allocs-" + suffix)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	writeAllocs("before")
	defer writeAllocs("after")
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := procCPU()
	var waveWall time.Duration
	for w, wave := range waves {
		if w == len(waves)-1 {
			// The final report needs configuring at 100 first: a
			// within-stage report, coalesced, not timed.
			for _, a := range agents {
				if _, err := pp.Report(ctx, a.id, a.tok, "", wire.Progress{Seq: int64(w*2 + 1), Stage: wire.StageConfiguring, Percentage: 100}); err != nil {
					b.Fatal(err)
				}
			}
		}
		seq := int64(w*2 + 2)
		written := make(chan struct{})
		smu.Lock()
		wrote[seq] = written
		if stored[seq] >= n {
			close(written)
		}
		smu.Unlock()
		t0 := time.Now()
		for _, a := range agents {
			wg.Go(func() {
				t1 := time.Now()
				p := wire.Progress{Seq: seq, Stage: wave.stage, Percentage: wave.pct}
				if _, err := pp.Report(ctx, a.id, a.tok, "", p); err != nil {
					b.Errorf("task %s %s: %v", a.id, wave.stage, err)
				}
				d := time.Since(t1)
				lmu.Lock()
				if w == len(waves)-1 {
					finalLat = append(finalLat, d)
				} else {
					lat = append(lat, d)
				}
				lmu.Unlock()
			})
		}
		wg.Wait()
		select {
		case <-written:
		case <-time.After(time.Minute):
			smu.Lock()
			got := stored[seq]
			smu.Unlock()
			b.Fatalf("wave %s: %d of %d reports stored after a minute", wave.stage, got, n)
		}
		waveWall += time.Since(t0)
	}
	b.StopTimer()
	cpu := procCPU() - cpu0
	runtime.ReadMemStats(&m1)
	slices.Sort(lat)
	slices.Sort(finalLat)
	reports := float64(len(lat) + len(finalLat))
	b.ReportMetric(float64(cpu.Microseconds())/reports, "cpu-µs/report")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/reports, "allocs/report")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/reports, "B/report")
	b.ReportMetric(float64(waveWall.Milliseconds())/float64(len(waves)), "ms/wave")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(finalLat[len(finalLat)/2].Microseconds())/1000, "final-p50-ms")
	b.ReportMetric(float64(finalLat[len(finalLat)*99/100].Microseconds())/1000, "final-p99-ms")
}

// procCPU is this process's user+system time.
func procCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
