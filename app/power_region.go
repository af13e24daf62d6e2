package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/power"
	"github.com/lpmos/lpmos/powermgr"
	"github.com/lpmos/lpmos/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

// powerMgrOptions are the flags of the region's power manager (issue 13).
type powerMgrOptions struct {
	pollInterval time.Duration
	concurrency  int
	retries      int
	backoff      time.Duration
	timeout      time.Duration
	rebootDelay  time.Duration
}

func (o *powerMgrOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&o.pollInterval, "bmc-poll-interval", powermgr.DefaultPollInterval, "how often the region reads the power state of its machines with a BMC (0: never)")
	f.IntVar(&o.concurrency, "bmc-poll-concurrency", powermgr.DefaultConcurrency, "BMCs the region polls at once")
	f.IntVar(&o.retries, "bmc-retries", powermgr.DefaultRetries, "times a failed BMC call is tried again (with backoff) before the power action is given up")
	f.DurationVar(&o.backoff, "bmc-retry-backoff", powermgr.DefaultBackoff, "first wait before a BMC retry (doubles, up to a minute)")
	f.DurationVar(&o.timeout, "bmc-timeout", power.DefaultTimeout, "bound for one BMC call (connect, login, command)")
	f.DurationVar(&o.rebootDelay, "bmc-reboot-delay", powermgr.DefaultRebootDelay, "wait between a completed install and the BMC reboot into the installed OS")
}

// startPowerManager runs the region's power manager beside the region.
func startPowerManager(ctx context.Context, g *errgroup.Group, st *store.Store, reg *health.Registry, metrics prometheus.Registerer, regionID string, o powerMgrOptions, log *slog.Logger) (*powermgr.Manager, error) {
	if o.concurrency < 1 {
		return nil, fmt.Errorf("--bmc-poll-concurrency %d: at least 1", o.concurrency)
	}
	if o.retries < 0 || o.pollInterval < 0 || o.timeout <= 0 {
		return nil, fmt.Errorf("--bmc-retries, --bmc-poll-interval must not be negative and --bmc-timeout must be positive")
	}
	interval := o.pollInterval
	if interval == 0 {
		interval = -1 // powermgr: never
	}
	retries := o.retries
	if retries == 0 {
		retries = -1 // powermgr: none
	}
	name := "region/" + regionID + "/power"
	observe, err := bmcMetrics(metrics, regionID)
	if err != nil {
		return nil, err
	}
	m, err := powermgr.New(powermgr.Config{
		Store: st, RegionID: regionID, PollInterval: interval, Concurrency: o.concurrency,
		Retries: retries, Backoff: o.backoff, Timeout: o.timeout, RebootDelay: o.rebootDelay, Logger: log,
		Health:  func(state string, err error) { reg.Set(name, state, err) },
		Observe: observe,
	})
	if err != nil {
		return nil, err
	}
	g.Go(func() error { return m.Run(ctx) })
	return m, nil
}

// bmcMetrics registers the region's BMC call metrics and returns the
// powermgr hook that feeds them; a nil registerer records nothing.
func bmcMetrics(reg prometheus.Registerer, regionID string) (func(string, error, time.Duration), error) {
	if reg == nil {
		return nil, nil
	}
	labels := prometheus.Labels{"region": regionID}
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lpmos_bmc_calls_total", ConstLabels: labels,
		Help: "BMC calls by the region's power manager, by step (power on, power off, power cycle, power on or cycle, set next boot to pxe|disk, status) and outcome (ok, error).",
	}, []string{"step", "outcome"})
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "lpmos_bmc_call_seconds", ConstLabels: labels,
		Help:    "Duration of BMC calls by step.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"step"})
	for _, c := range []prometheus.Collector{calls, seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register BMC metrics: %w", err)
		}
	}
	return func(step string, err error, took time.Duration) {
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		calls.WithLabelValues(step, outcome).Inc()
		seconds.WithLabelValues(step).Observe(took.Seconds())
	}, nil
}
