// Package httpmetrics measures HTTP requests by chi route pattern (never
// the raw path, so the label set stays bounded), method and status code.
package httpmetrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Unmatched is the route label of requests no route matched (404s).
const Unmatched = "unmatched"

// Metrics is lpmos_http_request_duration_seconds of one server.
type Metrics struct {
	dur *prometheus.HistogramVec
}

// New measures the server named server ("control-plane", "agent") of
// region ("" for the control plane: every series of one metric name has
// the same label names).
func New(server, region string) *Metrics {
	cl := prometheus.Labels{"server": server, "region": region}
	return &Metrics{dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "lpmos_http_request_duration_seconds",
		Help:        "HTTP requests by chi route pattern, method and status code, and how long they took (streams and downloads last as long as they run); _count is the number of requests.",
		ConstLabels: cl,
		Buckets:     []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120},
	}, []string{"method", "route", "code"})}
}

// Collector returns the metric to register.
func (m *Metrics) Collector() prometheus.Collector { return m.dur }

// Middleware measures every request; use it on a chi router so the route
// pattern is known once the request has been routed.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			route := Unmatched
			if rc := chi.RouteContext(r.Context()); rc != nil {
				if p := rc.RoutePattern(); p != "" {
					route = p
				}
			}
			code := ww.Status()
			if code == 0 {
				code = http.StatusOK
			}
			method := r.Method
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions:
			default:
				method = "other"
			}
			m.dur.WithLabelValues(method, route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(ww, r)
	})
}
