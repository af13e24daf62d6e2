package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
)

// Bounds the discovery flood must stay under (see BENCHMARKS.md).
const (
	floodMaxDB  = 64 << 20  // etcd db file
	floodMaxRSS = 512 << 20 // lpmos serve resident memory
)

// floodReport is a realistic discovery report (~1.3 KiB of JSON).
func floodReport(i int) []byte {
	mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
	hw := wire.Hardware{
		CPU:    wire.CPU{Model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", Sockets: 2, Cores: 64, Threads: 128},
		Memory: wire.Memory{TotalBytes: 512 << 30, TotalGB: 512},
		DMI: wire.DMI{Vendor: "Supermicro", Product: "SYS-1029U-TRT", Serial: fmt.Sprintf("S%09d", i),
			UUID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), BIOSVendor: "American Megatrends Inc.", BIOSVersion: "3.4", BIOSDate: "05/20/2021"},
		BootMode: "uefi", Kernel: "6.1.0-18-amd64", CollectedAt: time.Now().UTC(),
	}
	for d := range 4 {
		hw.Disks = append(hw.Disks, wire.Disk{Name: fmt.Sprintf("nvme%dn1", d), SizeBytes: 3840755982336, Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: fmt.Sprintf("S64HNE0R%06d%d", i, d)})
	}
	for n := range 2 {
		hw.NICs = append(hw.NICs, wire.NIC{Name: fmt.Sprintf("eno%d", n+1), MAC: mac, Driver: "ixgbe", SpeedMbps: 10000, Link: n == 0})
	}
	b, _ := json.Marshal(wire.HardwareReport{MACAddress: mac, Hardware: hw})
	return b
}

// BenchmarkDiscoveryFlood sends distinct-MAC discovery reports without a
// token from 7 loopback addresses (32 at a time) to a real `lpmos serve`
// and reports the etcd db size and the process RSS during (peak) and after
// the flood. "limited" runs with the default rate limit and cap (10,000
// reports); "relaxed" turns the rate limit off (12,000 reports), so only
// --max-discovered and the per-field limits bound it.
//
//	go test -run xxx -bench DiscoveryFlood -benchtime 1x ./app/
func BenchmarkDiscoveryFlood(b *testing.B) {
	for _, v := range []struct {
		name    string
		reports int
		args    []string
	}{
		{"limited", 10000, nil},
		{"relaxed", 12000, []string{"--agent-rate", "0"}},
	} {
		b.Run(v.name, func(b *testing.B) {
			p := startServe(b, b.TempDir(), v.args...)
			p.waitHealthy(b, 30*time.Second)
			db0, rss0 := p.dbSize(b), p.rss(b)
			var peakRSS atomic.Int64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						return
					case <-t.C:
					}
					if r := p.rss(b); r > peakRSS.Load() {
						peakRSS.Store(r)
					}
				}
			}()
			clients := make([]*http.Client, 7)
			for i := range clients {
				clients[i] = clientFrom(fmt.Sprintf("127.0.0.%d", 2+i), 30*time.Second)
			}
			var codes sync.Map // status -> *atomic.Int64
			count := func(code int) {
				c, _ := codes.LoadOrStore(code, new(atomic.Int64))
				c.(*atomic.Int64).Add(1)
			}
			b.ResetTimer()
			start := time.Now()
			for iter := range b.N {
				work := make(chan int)
				var wg sync.WaitGroup
				for w := range 32 {
					wg.Go(func() {
						for i := range work {
							code, _, err := postJSON(clients[(i+w)%len(clients)], p.agentURL()+wire.PathHardware, floodReport(i))
							if err != nil {
								code = -1
							}
							count(code)
						}
					})
				}
				for i := range v.reports {
					work <- iter*v.reports + i
				}
				close(work)
				wg.Wait()
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			<-sampled
			time.Sleep(2 * time.Second)
			db1, rss1 := p.dbSize(b), p.rss(b)
			machines := listMachines(b, p)
			got := map[int]int64{}
			codes.Range(func(k, v any) bool { got[k.(int)] = v.(*atomic.Int64).Load(); return true })
			b.ReportMetric(float64(db1)/(1<<20), "db_MiB")
			b.ReportMetric(float64(peakRSS.Load())/(1<<20), "peak_rss_MiB")
			b.ReportMetric(float64(rss1)/(1<<20), "rss_after_MiB")
			b.ReportMetric(float64(len(machines)), "stored")
			b.Logf("%d reports in %v: answers %v; machines stored %d; refused at the cap (metric) %v, rate limited %v; etcd db %.1f -> %.1f MiB; RSS %d MiB before, %d peak, %d after",
				v.reports*b.N, elapsed.Round(time.Millisecond), got, len(machines),
				p.metric(b, "lpmos_discovery_refused_total"), p.metric(b, "lpmos_agent_rate_limited_total"),
				float64(db0)/(1<<20), float64(db1)/(1<<20), rss0>>20, peakRSS.Load()>>20, rss1>>20)
			if db1 > floodMaxDB || peakRSS.Load() > floodMaxRSS || len(machines) > 10000 {
				b.Errorf("unbounded: db %d bytes (max %d), peak RSS %d (max %d), %d machines (max 10000)", db1, floodMaxDB, peakRSS.Load(), floodMaxRSS, len(machines))
			}
			p.stop(b)
		})
	}
}

func listMachines(b testing.TB, p *lpmosProc) []json.RawMessage {
	b.Helper()
	req, _ := http.NewRequest("GET", p.url+"/api/v1/machines", nil)
	req.Header.Set("Authorization", "Bearer "+p.token(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var out []json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		b.Fatalf("list machines: %d %v", resp.StatusCode, err)
	}
	return out
}
