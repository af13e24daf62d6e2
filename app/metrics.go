package app

import (
	"fmt"

	"github.com/lpmos/lpmos/agentapi"
	"github.com/lpmos/lpmos/pxe"
	"github.com/prometheus/client_golang/prometheus"
)

// registerAgentAPIMetrics exports the agent API's requests (by route,
// code, duration) and refusals (by reason).
func registerAgentAPIMetrics(reg prometheus.Registerer, region *agentapi.Region) error {
	for _, c := range region.Collectors() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register agent API metrics: %w", err)
		}
	}
	return nil
}

// registerTFTPMetrics exports TFTP transfers by outcome.
func registerTFTPMetrics(reg prometheus.Registerer, region string, tftp *pxe.TFTP) error {
	desc := prometheus.NewDesc("lpmos_tftp_transfers_total", "TFTP transfers by outcome: sent, refused (unknown file, write request), failed (timeout, client error).",
		[]string{"outcome"}, prometheus.Labels{"region": region})
	c := constCollector{desc: desc, collect: func(ch chan<- prometheus.Metric) {
		s := tftp.Stats()
		for _, o := range []struct {
			name string
			v    uint64
		}{{"sent", s.Sent}, {"refused", s.Refused}, {"failed", s.Failed}} {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(o.v), o.name)
		}
	}}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("register TFTP metrics: %w", err)
	}
	return nil
}

// constCollector is one description and a function that emits its metrics.
type constCollector struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c constCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
