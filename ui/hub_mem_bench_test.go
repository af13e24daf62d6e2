package ui_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// BenchmarkHubMemory measures what the live view holds for N tasks that
// have reported hardware: the Go heap live after the hub loaded them and
// encoded its snapshot, minus the heap before, and the snapshot's size.
//
//	LPMOS_HUBMEM_TASKS=10000 go test -run '^$' -bench BenchmarkHubMemory -benchtime 1x ./ui/
func BenchmarkHubMemory(b *testing.B) {
	n := 2000
	if v := os.Getenv("LPMOS_HUBMEM_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("LPMOS_HUBMEM_TASKS=%q", v)
		}
	}
	ctx := context.Background()
	st := storetest.New(b)
	specs := make([]store.Spec, n)
	for i := range specs {
		specs[i] = store.Spec{RegionID: "dc1", TargetMAC: fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", i>>24&255, i>>16&255, i>>8&255, i&255),
			OSType: "ubuntu", OSVersion: "22.04", Hostname: fmt.Sprintf("node-%05d", i),
			SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx7m1aV0tqZ0Jd3Xh8m8oQm2b3s4y5z6A7B8C9D0E1F operator@example"}}
	}
	tasks, err := st.CreateTasks(ctx, specs)
	if err != nil {
		b.Fatal(err)
	}
	for i, t := range tasks {
		if _, err := st.ClaimTask(ctx, t.ID, "boot-token"); err != nil {
			b.Fatal(err)
		}
		if _, err := st.SetHardware(ctx, t.ID, sampleHardware(fmt.Sprintf("node-%05d", i))); err != nil {
			b.Fatal(err)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for b.Loop() {
		h0 := heap()
		h := ui.NewHub(st, ui.HubConfig{Logger: slog.New(slog.DiscardHandler)})
		hctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = h.Run(hctx) }()
		sub, err := h.Subscribe(ctx)
		if err != nil {
			b.Fatal(err)
		}
		snap := <-sub.C
		h.Unsubscribe(sub)
		h1 := heap()
		b.ReportMetric(float64(int64(h1)-int64(h0))/(1<<20), "hub-heap-MiB")
		b.ReportMetric(float64(len(snap))/1024, "snapshot-KiB")
		runtime.KeepAlive(h)
		cancel()
		<-done
	}
}
