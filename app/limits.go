package app

import (
	"fmt"
	"log/slog"
	"net"
	"syscall"

	"github.com/lpmos/lpmos/agentapi"
	"github.com/lpmos/lpmos/internal/netlimit"
	"github.com/lpmos/lpmos/ui"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// Descriptor budget: fdReserve descriptors stay for etcd (WAL, snapshots,
// db, peer and client connections), DHCP/TFTP, image files and outgoing
// connections; the two HTTP listeners share the rest.
const (
	fdReserve          = 256
	defaultMaxConnsCap = 10000 // per listener, whatever the descriptor limit
)

// limitOptions are the abuse limits of `serve` (flags).
type limitOptions struct {
	agentRate       float64
	agentBurst      int
	maxDiscovered   int
	maxConns        int
	maxConnsPerIP   int
	nofile          uint64 // soft RLIMIT_NOFILE after raiseNofile
	perListenerConn int    // computed from maxConns and nofile
}

func (o *limitOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Float64Var(&o.agentRate, "agent-rate", agentapi.DefaultAgentRate, "requests a second each source address may make to the unauthenticated agent endpoints (discovery reports, token-less approval polls, session exchange, iPXE scripts); 429 past it; 0: no limit")
	f.IntVar(&o.agentBurst, "agent-burst", agentapi.DefaultAgentBurst, "burst of --agent-rate")
	f.IntVar(&o.maxDiscovered, "max-discovered", agentapi.DefaultMaxDiscovered, "most discovered machines stored; a new MAC past it is refused (503) until old ones are deleted; 0: no cap")
	f.IntVar(&o.maxConns, "max-conns", 0, "open connections per HTTP listener (control plane, agent API); 0: from the file descriptor limit ((limit - 256) / 2, at most 10000)")
	f.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", 64, "open connections per source address (IPv6: per /64) per HTTP listener; 0: no cap")
}

// raiseNofile raises the soft RLIMIT_NOFILE to the hard limit and returns
// the soft limit in force.
func raiseNofile(log *slog.Logger) uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		log.Warn("cannot read the file descriptor limit", "error", err)
		return 0
	}
	soft := r.Cur
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			log.Warn("cannot raise the file descriptor limit", "soft", soft, "hard", r.Max, "error", err)
			return soft
		}
	}
	log.Info("file descriptor limit", "soft_at_start", soft, "soft", r.Cur, "hard", r.Max)
	return r.Cur
}

// connCap returns the connection cap of each HTTP listener: --max-conns,
// or what the descriptor limit leaves after fdReserve, split between the
// two listeners; never more than the descriptors allow.
func connCap(maxConns int, nofile uint64) int {
	avail := defaultMaxConnsCap
	if nofile > 0 {
		avail = max(int(min(nofile, 1<<30))-fdReserve, 32) / 2
	}
	if maxConns <= 0 {
		return min(avail, defaultMaxConnsCap)
	}
	return min(maxConns, avail)
}

// prepare raises the descriptor limit and computes the connection caps.
func (o *limitOptions) prepare(log *slog.Logger) {
	o.nofile = raiseNofile(log)
	o.perListenerConn = connCap(o.maxConns, o.nofile)
	if o.maxConns > o.perListenerConn {
		log.Warn("--max-conns lowered to what the file descriptor limit allows (raise the hard limit: ulimit -Hn / LimitNOFILE=)", "max_conns", o.maxConns, "allowed", o.perListenerConn, "nofile", o.nofile)
	}
	log.Info("connection limits", "max_conns_per_listener", o.perListenerConn, "max_conns_per_ip", o.maxConnsPerIP,
		"agent_rate", o.agentRate, "agent_burst", o.agentBurst, "max_discovered", o.maxDiscovered)
}

// listener returns the connection limiter of one HTTP listener, its
// counters registered in metrics.
func (o *limitOptions) listener(name string, plainHTTP bool, metrics prometheus.Registerer, log *slog.Logger) (func(net.Listener) net.Listener, error) {
	l := netlimit.New(netlimit.Config{Name: name, MaxConns: o.perListenerConn, MaxPerSource: o.maxConnsPerIP, PlainHTTP: plainHTTP, Logger: log})
	labels := prometheus.Labels{"listener": name}
	for _, c := range []struct {
		name, help string
		gauge      bool
		get        func(netlimit.Stats) float64
	}{
		{"lpmos_http_connections_open", "HTTP connections open now.", true, func(s netlimit.Stats) float64 { return float64(s.Open) }},
		{"lpmos_http_connections_accepted_total", "HTTP connections admitted.", false, func(s netlimit.Stats) float64 { return float64(s.Accepted) }},
		{"lpmos_http_connections_refused_total", "HTTP connections closed at once: their source address was at --max-conns-per-ip, or the listener at --max-conns.", false, func(s netlimit.Stats) float64 { return float64(s.Refused) }},
		{"lpmos_http_connections_evicted_total", "HTTP connections closed to admit a source address holding fewer (listener at --max-conns).", false, func(s netlimit.Stats) float64 { return float64(s.Evicted) }},
		{"lpmos_http_accept_errors_total", "Failed accepts (out of file descriptors: EMFILE/ENFILE), backed off and retried.", false, func(s netlimit.Stats) float64 { return float64(s.AcceptErrors) }},
	} {
		get := c.get
		f := func() float64 { return get(l.Stats()) }
		var m prometheus.Collector = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help, ConstLabels: labels}, f)
		if c.gauge {
			m = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: c.name, Help: c.help, ConstLabels: labels}, f)
		}
		if err := metrics.Register(m); err != nil {
			return nil, fmt.Errorf("register connection metrics: %w", err)
		}
	}
	return l.Listen, nil
}

// limitControlPlane caps the control plane's connections.
func (o *limitOptions) limitControlPlane(srv *ui.Server, plainHTTP bool, metrics prometheus.Registerer, log *slog.Logger) error {
	wrap, err := o.listener("control-plane", plainHTTP, metrics, log)
	if err != nil {
		return err
	}
	srv.LimitConns(wrap)
	return nil
}

// registerRegionLimitMetrics exports what the region's abuse limits refused.
func registerRegionLimitMetrics(reg prometheus.Registerer, regionID string, region *agentapi.Region) error {
	labels := prometheus.Labels{"region": regionID}
	for _, c := range []struct {
		name, help string
		get        func(agentapi.LimitStats) float64
	}{
		{"lpmos_discovery_refused_total", "New discovered machines refused at --max-discovered.", func(s agentapi.LimitStats) float64 { return float64(s.DiscoveryRefused) }},
		{"lpmos_agent_rate_limited_total", "Unauthenticated agent requests refused with 429 (--agent-rate).", func(s agentapi.LimitStats) float64 { return float64(s.RateLimited) }},
		{"lpmos_hardware_reports_refused_total", "Hardware reports refused by a field, count or size limit (400/413).", func(s agentapi.LimitStats) float64 { return float64(s.HardwareRefused) }},
	} {
		get := c.get
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help, ConstLabels: labels},
			func() float64 { return get(region.LimitStats()) })); err != nil {
			return fmt.Errorf("register region limit metrics: %w", err)
		}
	}
	return nil
}
