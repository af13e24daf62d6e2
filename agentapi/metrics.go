package agentapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/internal/httpmetrics"
	"github.com/prometheus/client_golang/prometheus"
)

// regionMetrics are the agent API's request and refusal metrics.
type regionMetrics struct {
	http    *httpmetrics.Metrics
	refusal *prometheus.CounterVec
	region  string
}

func newRegionMetrics(region string) *regionMetrics {
	return &regionMetrics{
		http: httpmetrics.New("agent", region),
		refusal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "lpmos_agent_refusals_total",
			Help:        "Agent API requests refused, by reason (bad_request, unauthorized, forbidden, not_found, conflict, too_large, rate_limited, unavailable, internal) and route.",
			ConstLabels: prometheus.Labels{"region": region},
		}, []string{"reason", "route"}),
		region: region,
	}
}

// Collectors returns the agent API's metrics for /metrics (lpmos serve
// registers them).
func (r *Region) Collectors() []prometheus.Collector {
	unwritten := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "lpmos_agent_progress_unwritten",
		Help:        "Agent stage and status changes answered on acceptance and not yet written to etcd (store/fastprogress.go).",
		ConstLabels: prometheus.Labels{"region": r.metrics.region},
	}, func() float64 { return float64(r.fast.pp.Unwritten()) })
	return []prometheus.Collector{r.metrics.http.Collector(), r.metrics.refusal, unwritten}
}

// refusalReasons names the status codes the agent API refuses with.
func refusalReason(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	if code >= 500 {
		return "internal"
	}
	return "other"
}

func (m *regionMetrics) refused(req *http.Request, code int) {
	route := httpmetrics.Unmatched
	if rc := chi.RouteContext(req.Context()); rc != nil && rc.RoutePattern() != "" {
		route = rc.RoutePattern()
	}
	m.refusal.WithLabelValues(refusalReason(code), route).Inc()
}
