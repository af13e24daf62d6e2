package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// BenchmarkTaskList10k times GET /api/v1/tasks, unpaged, with 10,000
// tasks, through a real server on loopback, to the last byte of the
// answer (not decoded): "kept" lists with the JSON the task index kept
// from the previous list, "changed" with none kept (a fresh index on the
// same etcd, as after a round of progress that changed every task); and
// the first page of 50. cpu-ms/op is the process's CPU (server, the
// embedded etcd and the reading client) per list: on a shared machine,
// the figure load does not inflate.
//
//	go test -run '^$' -bench TaskList10k -benchtime 10x -benchmem ./ui/
func BenchmarkTaskList10k(b *testing.B) {
	ctx := context.Background()
	cfg := storetest.Config(b, b.TempDir())
	st, err := store.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	seedTasks(b, st, tasks10k)
	e := newLiveOn(b, st)
	want := fmt.Appendf(nil, `"count":%d,`, tasks10k)
	list := func(b *testing.B, url, query string, count []byte) int {
		req, err := http.NewRequest("GET", url+"/api/v1/tasks"+query, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body[max(0, len(body)-200):], count) {
			b.Fatalf("GET /api/v1/tasks%s: %d, %d bytes, %v", query, resp.StatusCode, len(body), err)
		}
		return len(body)
	}
	list(b, e.url, "", want) // the index loads and keeps every task's JSON
	b.Run("kept", func(b *testing.B) {
		n := 0
		c0 := cpuTime()
		for b.Loop() {
			n = list(b, e.url, "", want)
		}
		b.ReportMetric(float64(n), "bytes/list")
		b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/1e6, "cpu-ms/op")
	})
	b.Run("changed", func(b *testing.B) {
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			other, err := store.Open(ctx, storetest.ClientOf(cfg))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = other.Close() }) // after its server stops
			reg := &health.Registry{}
			reg.Set("etcd", health.Running, nil)
			fresh := serveLive(b, other, e.token, ui.Config{Store: other, Health: reg, Version: "test", Logger: slog.New(slog.DiscardHandler)})
			list(b, fresh.url, "?limit=1", []byte(`"count":1,`)) // the index loads (one task's JSON made)
			b.StartTimer()
			c0 := cpuTime()
			list(b, fresh.url, "", want)
			cpu += cpuTime() - c0
		}
		b.ReportMetric(float64(cpu)/float64(b.N)/1e6, "cpu-ms/op")
	})
	b.Run("first-page-50", func(b *testing.B) {
		c0 := cpuTime()
		for b.Loop() {
			list(b, e.url, "?limit=50", []byte(`"count":50,`))
		}
		b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/1e6, "cpu-ms/op")
	})
}
