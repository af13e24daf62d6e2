package ui

import (
	"net/http"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metricsHandler serves /metrics: lpmos's own gauges next to the Go and
// process collectors and whatever the caller registered in cfg.Metrics
// (the regional services' counters). Values are read at scrape time from
// state the process keeps anyway: a scrape never queries etcd.
func (s *Server) metricsHandler() http.Handler {
	reg := s.cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	tasks := prometheus.NewDesc("lpmos_tasks", "Tasks by status, as this process's live view of etcd sees them.", []string{"status"}, nil)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lpmos_websocket_clients", Help: "Dashboards connected to /ws."},
			func() float64 { return float64(s.hub.Stats().Clients) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lpmos_websocket_dropped_total", Help: "WebSocket clients dropped for reading too slowly."},
			func() float64 { return float64(s.hub.Stats().Dropped) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lpmos_etcd_revision", Help: "Last etcd revision the live view applied."},
			func() float64 { return float64(s.hub.Stats().Revision) }),
		collectorFunc{desc: tasks, collect: func(ch chan<- prometheus.Metric) {
			counts := s.hub.StatusCounts()
			for _, st := range wire.AllStatuses {
				ch <- prometheus.MustNewConstMetric(tasks, prometheus.GaugeValue, float64(counts[st]), string(st))
			}
		}},
	)
	reg.MustRegister(s.spaceCollectors()...) // ui/space.go
	reg.MustRegister(s.httpm.Collector())
	reg.MustRegister(s.tasksm.collectors()...)
	return promhttp.HandlerFor(prometheus.Gatherers{reg, etcdGatherer{}}, promhttp.HandlerOpts{})
}

// etcdGatherer serves the embedded etcd member's own metrics (etcd_*:
// etcd_server_has_leader, etcd_server_leader_changes_seen_total,
// etcd_mvcc_db_total_size_in_bytes, etcd_server_quota_backend_bytes, disk
// and network latencies), which etcd registers with the default registry.
// Only etcd_* families are taken: the Go and process collectors are lpmos's.
type etcdGatherer struct{}

func (etcdGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, _ := prometheus.DefaultGatherer.Gather() // a partial answer still serves; lpmos's own never fail for etcd's
	out := mfs[:0]
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "etcd_") {
			out = append(out, mf)
		}
	}
	return out, nil
}

// collectorFunc is a prometheus.Collector made of one description and a
// function that emits its metrics.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
