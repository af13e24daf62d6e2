package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agentapi"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/pxe"
	"github.com/lpmos/lpmos/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

// regionalOptions are the flags of the regional role.
type regionalOptions struct {
	advertiseIP     string
	publicURL       string
	bootDir         string
	kernel          string
	initrd          string
	kernelModules   string
	kernelRelease   string
	discoverUnknown bool
	stallAfter      time.Duration
	dhcpMode        string
	dhcpIface       string
	dhcpAddr        string
	pxeAddr         string
	tftpAddr        string
	uefiBootFile    string
	rangeStart      string
	rangeEnd        string
	netmask         string
	router          string
	dns             []string
	leaseTime       time.Duration

	serialConsole string // agent kernel line console=<value>
	kernelArgs    string // more agent kernel line arguments, space separated
	dhcpAnswerAll bool   // full DHCP: also answer non-PXE clients

	reportRate      float64       // progress reports a second the region asks agents to stay under
	progressWindow  time.Duration // coalescing window of within-stage progress
	progressPersist time.Duration // how often a within-stage report is written to etcd

	agentTLS string // on|off: agent API and images over HTTPS (app/agenttls.go)
	apiBind  string // interface address the agent API listens on; empty: all

	power powerMgrOptions // BMC power manager (app/power_region.go)
}

func (o *regionalOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.advertiseIP, "advertise-ip", "", "IPv4 address machines reach this region at (default: the address of the interface with the default route)")
	f.StringVar(&o.publicURL, "public-url", "", "base URL of the agent API as machines see it (default http://<advertise-ip>:<api-port>)")
	f.StringVar(&o.bootDir, "boot-dir", "", "directory with the agent kernel and initramfs (default <data-dir>/boot)")
	f.StringVar(&o.kernel, "kernel", "vmlinuz", "kernel file name in --boot-dir")
	f.StringVar(&o.initrd, "initrd", "initramfs.img", "initramfs file name in --boot-dir")
	f.StringVar(&o.kernelModules, "kernel-modules-dir", "", "module tree of --kernel (like /lib/modules): when --initrd is missing, build it there from these modules and the embedded agent")
	f.StringVar(&o.kernelRelease, "kernel-release", "", "release of --kernel for --kernel-modules-dir (default: read from the kernel)")
	f.BoolVar(&o.discoverUnknown, "discover-unknown", true, "boot machines without a task into discovery (they appear under machines)")
	f.DurationVar(&o.stallAfter, "stall-after", 2*time.Minute, "an installing task with no report this long becomes stalled")
	f.Float64Var(&o.reportRate, "agent-report-rate", 2500, "progress reports a second the region asks its agents to stay under: with more installing tasks, answers ask agents for a longer interval; 0: never")
	f.DurationVar(&o.progressWindow, "progress-window", store.DefaultCoalesceWindow, "how long a within-stage progress report may wait to be written, coalesced with the task's next ones")
	f.DurationVar(&o.progressPersist, "progress-persist", store.DefaultPersistInterval, "how often at most a task's within-stage progress is written to etcd (at most --stall-after/4): this member's dashboards see every report, other members' every interval")
	f.StringVar(&o.dhcpMode, "dhcp-mode", "proxy", "DHCP: proxy (beside your DHCP server), full (hand out --dhcp-range-* addresses), off")
	f.StringVar(&o.dhcpIface, "dhcp-iface", "", "bind DHCP and TFTP to this interface")
	f.StringVar(&o.dhcpAddr, "dhcp-addr", ":67", "DHCP listen address")
	f.StringVar(&o.pxeAddr, "pxe-addr", ":4011", "PXE boot server (proxyDHCP) listen address")
	f.StringVar(&o.tftpAddr, "tftp-addr", ":69", `TFTP listen address ("off" to disable)`)
	f.StringVar(&o.uefiBootFile, "uefi-boot-file", pxe.FileUEFI, "iPXE build for x86-64 UEFI clients: ipxe.efi or snponly.efi")
	f.StringVar(&o.rangeStart, "dhcp-range-start", "", "full DHCP mode: first address to hand out")
	f.StringVar(&o.rangeEnd, "dhcp-range-end", "", "full DHCP mode: last address to hand out")
	f.StringVar(&o.netmask, "dhcp-netmask", "255.255.255.0", "full DHCP mode: netmask")
	f.StringVar(&o.router, "dhcp-router", "", "full DHCP mode: default gateway (option 3)")
	f.StringSliceVar(&o.dns, "dhcp-dns", nil, "full DHCP mode: DNS servers (option 6)")
	f.DurationVar(&o.leaseTime, "dhcp-lease-time", time.Hour, "full DHCP mode: lease time")
	f.StringVar(&o.serialConsole, "serial-console", pxe.DefaultSerialConsole, "serial console of the agent's kernel line (console=<value>): port and speed, e.g. ttyS1,115200n8")
	f.StringVar(&o.kernelArgs, "agent-kernel-args", "", `more arguments for the agent's kernel line, space separated (e.g. "no_timer_check" for VMs on a busy host); each [A-Za-z0-9_.,:/=+@-]`)
	f.StringVar(&o.agentTLS, "agent-tls", "on", "on: agents call the API and download images over HTTPS (certificate from the cluster CA, pinned on the kernel line as lpmos_ca); iPXE's /boot/* stays plain HTTP on the same port. off: everything plain HTTP (a lab's explicit choice)")
	f.StringVar(&o.apiBind, "api-bind", "", "IP address the agent API (--api-port) listens on (default: all interfaces)")
	o.power.addFlags(cmd)
	f.BoolVar(&o.dhcpAnswerAll, "dhcp-answer-all", true, "full DHCP mode: also give addresses to clients that are not PXE booting (the installed OS); false answers PXE clients only")
}

// startRegional starts the agent API and, unless turned off, DHCP and TFTP.
// A PXE service that cannot start (no root for port 67, say) is reported
// in /api/v1/health and the log; the rest of the region keeps running.
// loaded reports whether the region's start-up loads are done
// (app/memrelease.go).
func startRegional(ctx context.Context, g *errgroup.Group, st *store.Store, reg *health.Registry, metrics prometheus.Registerer, o serveOptions, log *slog.Logger) (loaded func() bool, err error) {
	ro := o.regional
	images, err := o.imagePolicy()
	if err != nil {
		return nil, err
	}
	ip, err := advertiseIP(ro.advertiseIP)
	if err != nil {
		return nil, err
	}
	agentTLS, err := ro.agentTLSOn()
	if err != nil {
		return nil, err
	}
	apiAddr, err := ro.apiListenAddr(o.apiPort)
	if err != nil {
		return nil, err
	}
	publicURL := ro.publicURL
	if agentTLS && strings.HasPrefix(publicURL, "http://") {
		return nil, fmt.Errorf("--public-url %q: the agent API serves HTTPS (--agent-tls=on), so use https://; or pass --agent-tls=off", publicURL)
	}
	if publicURL == "" {
		scheme := "http"
		if agentTLS {
			scheme = "https"
		}
		publicURL = fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(ip.String(), fmt.Sprint(o.apiPort)))
	}
	var tlsCfg agentTLSConfig
	var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if agentTLS {
		if tlsCfg, err = issueAgentTLS(ctx, st, o.name, ip, publicURL, agentCertLifetime); err != nil {
			return nil, err
		}
		log.Info("agent API on HTTPS", "ca_pin", "sha256:"+tlsCfg.pin, "sans", tlsCfg.hosts)
		ac := newAgentCert(tlsCfg.cert, agentCertLifetime, func(ctx context.Context) (*tls.Certificate, error) { // app/agentcert.go
			next, err := issueAgentTLS(ctx, st, o.name, ip, publicURL, agentCertLifetime)
			return next.cert, err
		}, log)
		getCert = ac.GetCertificate
		g.Go(func() error { ac.run(ctx); return nil })
	}
	bootDir := ro.bootDir
	if bootDir == "" {
		bootDir = filepath.Join(o.dataDir, "boot")
	}
	if err := os.MkdirAll(bootDir, 0o755); err != nil {
		return nil, fmt.Errorf("create boot dir %s: %w", bootDir, err)
	}
	if err := ensureInitramfs(bootDir, ro, log); err != nil {
		return nil, err
	}
	wrap, err := o.limits.listener("agent-api", true, metrics, log)
	if err != nil {
		return nil, err
	}
	region, err := agentapi.New(agentapi.Config{
		Store:           st,
		RegionID:        o.regionID,
		AgentRate:       o.limits.agentRate, // app/limits.go
		AgentBurst:      o.limits.agentBurst,
		MaxDiscovered:   o.limits.maxDiscovered,
		WrapListener:    wrap,
		Addr:            apiAddr,
		TLSCert:         tlsCfg.cert,
		GetCertificate:  getCert,
		CAPin:           tlsCfg.pin,
		PublicURL:       publicURL,
		BootDir:         bootDir,
		KernelName:      ro.kernel,
		InitrdName:      ro.initrd,
		DiscoverUnknown: ro.discoverUnknown,
		StallAfter:      ro.stallAfter,
		ReportRate:      ro.reportRate,
		ProgressWindow:  ro.progressWindow,
		ProgressPersist: ro.progressPersist,
		SecretFile:      filepath.Join(o.dataDir, "region-"+o.regionID+".secret"),
		Member:          o.name,
		Logger:          log,
		Images:          images,

		SerialConsole:   ro.serialConsole,
		ExtraKernelArgs: strings.Fields(ro.kernelArgs),
	})
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", o.regionID, err)
	}
	if err := registerAgentAPIMetrics(metrics, region); err != nil { // app/metrics.go
		return nil, err
	}
	if err := registerRegionLimitMetrics(metrics, o.regionID, region); err != nil {
		return nil, err
	}
	reg.AddSource(func() []health.Service {
		var out []health.Service
		for name, s := range region.State() {
			out = append(out, health.Service{Name: "region/" + o.regionID + "/" + name, State: s.State, Error: s.Error, Since: s.Since})
		}
		return out
	})
	g.Go(func() error { return region.Start(ctx) })
	pm, err := startPowerManager(ctx, g, st, reg, metrics, o.regionID, ro.power, log)
	if err != nil {
		return nil, err
	}
	loaded = func() bool { return region.Loaded() && pm.Loaded() }

	if ro.dhcpMode != string(pxe.ModeOff) {
		dcfg := pxe.DHCPConfig{
			Mode:         pxe.Mode(ro.dhcpMode),
			ServerIP:     ip,
			Interface:    ro.dhcpIface,
			HTTPPort:     o.apiPort,
			UEFIBootFile: ro.uefiBootFile,
			Machines:     region,
			Logger:       log,
			DHCPAddr:     ro.dhcpAddr,
			PXEAddr:      ro.pxeAddr,
		}
		if dcfg.Mode == pxe.ModeFull {
			if dcfg.Full, err = ro.fullDHCP(region.Leases()); err != nil {
				return nil, err
			}
		}
		dhcp, err := pxe.NewProxyDHCP(dcfg)
		if err != nil {
			return nil, fmt.Errorf("dhcp: %w", err)
		}
		if err := registerDHCPMetrics(metrics, o.regionID, dhcp); err != nil {
			return nil, err
		}
		runOptional(ctx, g, reg, "region/"+o.regionID+"/dhcp-"+ro.dhcpMode, log, dhcp.Start)
	} else {
		reg.Set("region/"+o.regionID+"/dhcp", health.Disabled, nil)
	}
	if ro.tftpAddr != "off" && ro.tftpAddr != "" {
		tftp, err := pxe.NewTFTP(pxe.TFTPConfig{Addr: ro.tftpAddr, Interface: ro.dhcpIface, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("tftp: %w", err)
		}
		if err := registerTFTPMetrics(metrics, o.regionID, tftp); err != nil { // app/metrics.go
			return nil, err
		}
		runOptional(ctx, g, reg, "region/"+o.regionID+"/tftp", log, tftp.Start)
	} else {
		reg.Set("region/"+o.regionID+"/tftp", health.Disabled, nil)
	}
	log.Info("region configured", "region", o.regionID, "public_url", publicURL, "advertise_ip", ip.String(),
		"boot_dir", bootDir, "dhcp_mode", ro.dhcpMode, "discover_unknown", ro.discoverUnknown)
	return loaded, nil
}

// registerDHCPMetrics exports the DHCP server's packet counters.
func registerDHCPMetrics(reg prometheus.Registerer, region string, dhcp *pxe.ProxyDHCP) error {
	for _, c := range []struct {
		name, help string
		get        func(pxe.DHCPStats) uint64
	}{
		{"received", "DHCP packets received.", func(s pxe.DHCPStats) uint64 { return s.Received }},
		{"answered", "DHCP packets answered.", func(s pxe.DHCPStats) uint64 { return s.Answered }},
		{"ignored", "DHCP packets ignored (not PXE, unknown MAC, not for us).", func(s pxe.DHCPStats) uint64 { return s.Ignored }},
		{"malformed", "DHCP packets dropped as malformed.", func(s pxe.DHCPStats) uint64 { return s.Malformed }},
		{"errors", "DHCP packets that failed to be answered.", func(s pxe.DHCPStats) uint64 { return s.Errors }},
	} {
		get := c.get
		err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "lpmos_dhcp_packets_" + c.name + "_total", Help: c.help,
			ConstLabels: prometheus.Labels{"region": region},
		}, func() float64 { return float64(get(dhcp.Stats())) }))
		if err != nil {
			return fmt.Errorf("register DHCP metrics: %w", err)
		}
	}
	return nil
}

// runOptional runs a service whose failure must not take the process down:
// it is reported in health and the log instead.
func runOptional(ctx context.Context, g *errgroup.Group, reg *health.Registry, name string, log *slog.Logger, start func(context.Context) error) {
	reg.Set(name, health.Running, nil)
	g.Go(func() error {
		err := start(ctx)
		switch {
		case err == nil || errors.Is(err, context.Canceled) || ctx.Err() != nil:
			reg.Set(name, health.Stopped, nil)
		default:
			hint := ""
			if errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
				hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
			}
			err = fmt.Errorf("%w%s", err, hint)
			reg.Set(name, health.Failed, err)
			log.Error("service failed; the rest of lpmos keeps running", "service", name, "error", err)
		}
		return nil
	})
}

func (o *regionalOptions) fullDHCP(leases pxe.Leases) (pxe.FullDHCP, error) {
	parse := func(flag, v string) (net.IP, error) {
		ip := net.ParseIP(v).To4()
		if ip == nil {
			return nil, fmt.Errorf("--%s %q: want an IPv4 address (needed with --dhcp-mode=full)", flag, v)
		}
		return ip, nil
	}
	var f pxe.FullDHCP
	var err error
	if f.RangeStart, err = parse("dhcp-range-start", o.rangeStart); err != nil {
		return f, err
	}
	if f.RangeEnd, err = parse("dhcp-range-end", o.rangeEnd); err != nil {
		return f, err
	}
	mask, err := parse("dhcp-netmask", o.netmask)
	if err != nil {
		return f, err
	}
	f.Netmask = net.IPMask(mask)
	if o.router != "" {
		if f.Router, err = parse("dhcp-router", o.router); err != nil {
			return f, err
		}
	}
	for _, d := range o.dns {
		ip, err := parse("dhcp-dns", d)
		if err != nil {
			return f, err
		}
		f.DNS = append(f.DNS, ip)
	}
	f.LeaseTime = o.leaseTime
	f.AnswerAll = o.dhcpAnswerAll
	f.Leases = leases
	return f, nil
}

// advertiseIP returns the given address, or the IPv4 address the host
// would use to reach the outside (the interface with the default route);
// no packet is sent to find it. Without any route it falls back to loopback.
func advertiseIP(flag string) (net.IP, error) {
	if flag != "" {
		ip := net.ParseIP(flag).To4()
		if ip == nil {
			return nil, fmt.Errorf("--advertise-ip %q: want an IPv4 address", flag)
		}
		return ip, nil
	}
	// A UDP "connect" only picks a route and a source address.
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).IP.To4(), nil
	}
	return net.IPv4(127, 0, 0, 1).To4(), nil
}
