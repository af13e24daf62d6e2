package agentapi

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store/storetest"
)

// BenchmarkHeldPolls is the region's idle cost of held long-polls
// (issue 14): LPMOS_HELD_POLLS (default 5,000) goroutines wait in waitFor
// on tasks that do not change, for 2 s, while the task sync follows the
// watch (as agents waiting for the operator's approval). Reported: the
// process's CPU per poll per second (load-robust) and the re-reads made
// (done called after the first evaluation).
//
//	go test -run '^$' -bench BenchmarkHeldPolls -benchtime 1x ./agentapi/
func BenchmarkHeldPolls(b *testing.B) {
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("LPMOS_HELD_POLLS")); err == nil && v > 0 {
		n = v
	}
	r := newRegionB(b, storetest.New(b))
	for !r.following.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	rereads := 0
	registered := make(chan struct{}, n)
	for i := range n {
		wg.Go(func() {
			first := true
			_, _, _ = r.waitFor(ctx, time.Minute, fmt.Sprintf("t%05d", i), func() (bool, error) {
				if first {
					first = false
					registered <- struct{}{}
					return false, nil
				}
				mu.Lock()
				rereads++
				mu.Unlock()
				return false, nil
			})
		})
	}
	for range n {
		<-registered
	}
	b.ResetTimer()
	cpu0 := cpuSelf()
	const hold = 2 * time.Second
	time.Sleep(hold)
	cpu := cpuSelf() - cpu0
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(cpu.Microseconds())/float64(n)/hold.Seconds(), "cpu-µs/poll/s")
	b.ReportMetric(float64(cpu.Milliseconds())/hold.Seconds()/10, "%core")
	b.ReportMetric(float64(rereads), "rereads")
}
