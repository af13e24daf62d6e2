package store_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func benchMAC(i int) string {
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", byte(i>>32), byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// BenchmarkCreateTask measures one task creation: a transaction that checks
// the MAC index and writes spec, status, index and the first event.
func BenchmarkCreateTask(b *testing.B) {
	s := storetest.New(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.CreateTask(ctx, spec(benchMAC(i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkListTasks10k lists 10,000 tasks (each with an event, and half
// with progress) at one revision.
func BenchmarkListTasks10k(b *testing.B) {
	s := storetest.New(b)
	ctx := context.Background()
	const n = 10000
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := s.CreateTask(ctx, spec(benchMAC(1<<20+i)))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		tasks, _, err := s.ListTasks(ctx, store.Filter{})
		if err != nil || len(tasks) != n {
			b.Fatalf("listed %d tasks: %v", len(tasks), err)
		}
	}
}

// BenchmarkTransitionEventLimit measures one status change (installing <->
// stalled, one event each) on a task far under its event limit and on one
// at the limit, where each change also deletes the oldest event and
// rewrites the drop record.
func BenchmarkTransitionEventLimit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		limit int
	}{{"under_limit", 1 << 30}, {"at_limit_200", store.DefaultMaxTaskEvents}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := storetest.Config(b, b.TempDir())
			cfg.MaxTaskEvents = bc.limit
			s, err := store.Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			task, err := s.CreateTask(ctx, spec("02:00:00:00:0d:01"))
			if err != nil {
				b.Fatal(err)
			}
			for _, st := range []store.Status{"ready", "pending_approval", "approved", "installing"} {
				if _, err := s.Transition(ctx, task.ID, st, ""); err != nil {
					b.Fatal(err)
				}
			}
			flip := func(i int) {
				to := store.Status("stalled")
				if i%2 == 1 {
					to = "installing"
				}
				if _, err := s.Transition(ctx, task.ID, to, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for ; i < 250; i++ { // past the limit of the bounded case
				flip(i)
			}
			for b.Loop() {
				flip(i)
				i++
			}
		})
	}
}

// BenchmarkReopenedMemberHeap writes 9,000 entries of 8 KB (the size of
// a large hardware report), restarts the member on the same data dir and
// reports the Go heap after the restart: what etcd's in-memory raft log
// costs a member (store/etcd.go, SnapshotCount).
func BenchmarkReopenedMemberHeap(b *testing.B) {
	for range b.N {
		dir := b.TempDir()
		ctx := context.Background()
		s, err := store.Open(ctx, storetest.Config(b, dir))
		if err != nil {
			b.Fatal(err)
		}
		val := strings.Repeat("x", 8000)
		for i := range 9000 {
			if _, err := s.Client().Put(ctx, fmt.Sprintf("/bench/%06d", i), val); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(heapMiB(), "MiB-heap-written")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		s, err = store.Open(ctx, storetest.Config(b, dir))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(heapMiB(), "MiB-heap-reopened")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func heapMiB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// BenchmarkFoldEndedEvents folds rounds of 2,000 ended tasks with 10
// event keys each (the first layout's stamps; the fold's work is the
// same: decode 10 values, write one, delete the rest by range), as the
// maintenance loop does: µs of wall time and of this process's CPU (the
// embedded member's apply included) per task.
func BenchmarkFoldEndedEvents(b *testing.B) {
	s := storetest.New(b)
	ctx := context.Background()
	const n, keys = 2000, 10
	var wall time.Duration
	var cpu int64
	for round := 0; round < b.N; round++ {
		b.StopTimer()
		at := time.Now().Add(-time.Hour)
		var kvs [][2]string
		for i := range n {
			id := fmt.Sprintf("%08x-0000-4000-8000-%012x", round, i)
			p := "/tasks/" + id + "/"
			kvs = append(kvs,
				[2]string{p + "spec", fmt.Sprintf(`{"region_id":"dc1","target_mac":"%s","os_type":"ubuntu","os_version":"22.04","created_at":%q}`, benchMAC(round<<16+i), at.Format(time.RFC3339Nano))},
				[2]string{p + "status", fmt.Sprintf(`{"s":"completed","r":"installation completed","u":%d,"a":1}`, at.UnixMilli())})
			for k := range keys {
				kvs = append(kvs, [2]string{fmt.Sprintf("%sevents/%020d", p, at.Add(time.Duration(k)*time.Second).UnixNano()),
					`{"f":"approved","t":"installing","m":"agent reported progress"}`})
			}
		}
		if err := s.PutRaw(ctx, kvs); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.TaskSummaries(ctx); err != nil {
			b.Fatal(err)
		}
		cpu0 := processCPU()
		b.StartTimer()
		start := time.Now()
		st, err := s.FoldEndedEvents(ctx, time.Now(), n, nil)
		wall += time.Since(start)
		cpu += processCPU() - cpu0
		if err != nil || st.Tasks != n {
			b.Fatalf("fold: %+v, %v", st, err)
		}
	}
	b.ReportMetric(float64(wall.Microseconds())/float64(b.N*n), "µs/task")
	b.ReportMetric(float64(cpu)/1e3/float64(b.N*n), "cpu-µs/task")
}

// processCPU is this process's user and system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
