package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

// serveOptions are the flags of `lpmos serve`.
type serveOptions struct {
	role          string
	dataDir       string
	name          string
	listenAddr    string
	apiPort       int
	limits        limitOptions // app/limits.go
	regionID      string
	etcdEndpoints []string
	etcdClientURL string
	etcdPeerURL   string
	etcdCA        string
	etcdCert      string
	etcdKey       string
	// Set by `lpmos join` (not flags): start the member into an existing
	// cluster with this initial cluster.
	clusterState   string
	initialCluster string
	tlsCert        string
	tlsKey         string
	tls            string // --tls: on (default) or off (app/servecert.go)
	logLevel       string
	logFormat      string
	regional       regionalOptions
	images         imageOptions
	// etcd space (app/etcdspace.go)
	etcdQuotaBytes          int64
	etcdCompactionRetention time.Duration
	etcdMaintenanceInterval time.Duration
	// onReady (set by `lpmos join`, not a flag) runs once every service
	// has started.
	onReady func()
	// memberCertTTL: --member-cert-ttl (app/membercerts.go)
	memberCertTTL time.Duration
	// pprofAddr: --pprof-addr, loopback only (app/pprof.go)
	pprofAddr string
	// memoryLimit: --memory-limit, the Go runtime's soft limit (app/memlimit.go)
	memoryLimit string
}

// roles is the parsed --role list.
type roles struct{ controlPlane, regional bool }

func parseRoles(s string) (roles, error) {
	var r roles
	for _, part := range strings.Split(s, ",") {
		switch strings.TrimSpace(part) {
		case "all":
			r.controlPlane, r.regional = true, true
		case "control-plane":
			r.controlPlane = true
		case "regional":
			r.regional = true
		default:
			return roles{}, fmt.Errorf("--role %q: use all, control-plane, regional, or a comma list of them", s)
		}
	}
	return r, nil
}

func newServeCmd(version string) *cobra.Command {
	o := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run lpmos: embedded etcd, control plane and/or a region",
		Long: `Run lpmos. With --role=all (the default) one process runs an embedded etcd
member, the control plane (REST API and dashboard on --listen-addr) and one
region (agent API on --api-port, proxyDHCP, TFTP, iPXE boot).

On first start it creates an admin token and writes it to <data-dir>/admin.token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadMemberFile(cmd.Flags(), &o); err != nil {
				return err
			}
			return runServe(cmd.Context(), o, version, cmd.ErrOrStderr())
		},
	}
	addServeFlags(cmd, &o)
	return cmd
}

// addServeFlags adds the flags `serve` and `join` share.
func addServeFlags(cmd *cobra.Command, o *serveOptions) {
	f := cmd.Flags()
	o.limits.addFlags(cmd)
	f.StringVar(&o.role, "role", "all", "roles to run: all, control-plane, regional (comma list allowed)")
	f.StringVar(&o.dataDir, "data-dir", "./lpmos-data", "directory for etcd data, the admin token and boot files")
	f.StringVar(&o.name, "name", "", "name of this etcd member (default: the host name)")
	f.StringVar(&o.listenAddr, "listen-addr", ":8080", "control plane listen address (REST API, dashboard)")
	f.IntVar(&o.apiPort, "api-port", 8081, "regional agent API port (also serves iPXE scripts, kernel, initramfs, images)")
	f.StringVar(&o.regionID, "region-id", "dc1", "region this process serves")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "use an external etcd cluster at these endpoints instead of the embedded member")
	f.StringVar(&o.etcdClientURL, "etcd-client-url", "https://127.0.0.1:2379", "embedded etcd client URL (https: mutual TLS with the cluster CA)")
	f.StringVar(&o.etcdPeerURL, "etcd-peer-url", "https://127.0.0.1:2380", "embedded etcd peer URL, reachable by the other members (https: mutual TLS with the cluster CA)")
	f.StringVar(&o.etcdCA, "etcd-ca", "", "with --etcd-endpoints: CA certificate of the external etcd")
	f.StringVar(&o.etcdCert, "etcd-cert", "", "with --etcd-endpoints: client certificate for the external etcd")
	f.StringVar(&o.etcdKey, "etcd-key", "", "with --etcd-endpoints: client key for the external etcd")
	f.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate for the control plane")
	f.StringVar(&o.tlsKey, "tls-key", "", "TLS key for the control plane")
	f.StringVar(&o.tls, "tls", "on", "control plane over HTTPS: on (certificate from the cluster CA in <data-dir>/pki, renewed automatically, unless --tls-cert/--tls-key) or off (plain HTTP)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.pprofAddr, "pprof-addr", "", "serve Go's profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060 (off by default; non-loopback addresses are refused)")
	f.StringVar(&o.memoryLimit, "memory-limit", "", "soft limit of the Go runtime's memory (heap, stacks; not etcd's mapped db file), e.g. 160MiB: the collector runs more often near it, trading CPU for RSS; off: none; default: GOMEMLIMIT if set, else none")
	o.regional.addFlags(cmd)
	o.images.addFlags(cmd)
	addEtcdSpaceFlags(cmd, o)
	addMemberCertFlags(cmd, o) // app/membercerts.go
}

func runServe(ctx context.Context, o serveOptions, version string, logOut io.Writer) error {
	log, err := newLogger(logOut, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	r, err := parseRoles(o.role)
	if err != nil {
		return err
	}
	if err := o.checkEtcdSpace(); err != nil {
		return err
	}
	if err := o.checkMemberCertTTL(); err != nil {
		return err
	}
	if err := checkPprofAddr(o.pprofAddr); err != nil {
		return err
	}
	memLimit, err := parseMemoryLimit(o.memoryLimit)
	if err != nil {
		return err
	}
	tlsOn, err := tlsMode(o.tls)
	if err != nil {
		return err
	}
	if !tlsOn && (o.tlsCert != "" || o.tlsKey != "") {
		return errors.New("--tls=off with --tls-cert/--tls-key: choose one (drop --tls=off to serve HTTPS with your certificate)")
	}
	if o.name == "" {
		o.name, _ = os.Hostname()
		if o.name == "" {
			o.name = "lpmos"
		}
	}
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", o.dataDir, err)
	}
	unlock, err := lockDataDir(o.dataDir) // app/datadirlock.go: fail at once when another serve uses it
	if err != nil {
		return err
	}
	defer unlock()
	imgPolicy, err := o.imagePolicy()
	if err != nil {
		return err
	}
	applyMemoryLimit(log, memLimit) // app/memlimit.go
	start := time.Now()
	o.limits.prepare(log) // raise RLIMIT_NOFILE, size the connection caps
	reg := &health.Registry{}
	reg.Set("etcd", health.Starting, nil)
	st, err := store.Open(ctx, store.Config{
		DataDir:   o.dataDir,
		Endpoints: o.etcdEndpoints,
		Name:      o.name,
		ClientURL: o.etcdClientURL,
		PeerURL:   o.etcdPeerURL,
		CAFile:    o.etcdCA,
		CertFile:  o.etcdCert,
		KeyFile:   o.etcdKey,

		ClusterState:   o.clusterState,
		InitialCluster: o.initialCluster,
		Logger:         log,
		Space:          o.etcdSpace(),
		MemberCertTTL:  o.memberCertTTL,
	})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	if st.Embedded() {
		if err := saveMemberFile(o); err != nil {
			log.Warn("could not record this member's settings; restart with the same --name and --etcd-*-url flags", "error", err)
		}
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("close store", "error", err)
		}
	}()
	reg.Set("etcd", health.Running, nil)
	if err := ensureAdminToken(ctx, st, o.dataDir, log); err != nil {
		return err
	}

	metrics := prometheus.NewRegistry() // served at /metrics by the control plane
	g, gctx := errgroup.WithContext(ctx)
	if o.pprofAddr != "" {
		ln, err := listenPprof(o.pprofAddr)
		if err != nil {
			return err
		}
		g.Go(func() error { return servePprof(gctx, ln, log) })
	}
	g.Go(func() error { watchStoreHealth(gctx, st, reg); return nil })
	g.Go(func() error { st.RunMaintenance(gctx); return nil }) // quota, defrag, NOSPACE recovery
	if st.Embedded() {
		startClusterWatch(gctx, g, st, reg)
	}
	var startControlPlane func()
	var loads []func() bool // the start-up loads (app/memrelease.go)
	if r.controlPlane {
		cfg := ui.Config{Store: st, Addr: o.listenAddr, TLSCert: o.tlsCert, TLSKey: o.tlsKey, Health: reg, Version: version, Logger: log, Metrics: metrics, Images: imgPolicy}
		if tlsOn && o.tlsCert == "" && o.tlsKey == "" {
			sc, err := newServingCert(ctx, st, o, log)
			if err != nil {
				return err
			}
			cfg.GetCertificate = sc.GetCertificate
			g.Go(func() error { sc.run(gctx); return nil })
			log.Info("control plane on HTTPS with a certificate from the cluster CA: trust the CA to connect (lpmos CLI: --ca-cert, curl: --cacert, browser: import it)",
				"url", controlPlaneURL(o.listenAddr), "ca", sc.dir.Path("ca.crt"))
		}
		srv, err := ui.New(cfg)
		if err != nil {
			return err
		}
		if err := o.limits.limitControlPlane(srv, !tlsOn, metrics, log); err != nil {
			return err
		}
		startControlPlane = func() { g.Go(func() error { return srv.Start(gctx) }) }
		loads = append(loads, srv.Loaded)
	}
	if r.regional {
		loaded, err := startRegional(gctx, g, st, reg, metrics, o, log)
		if err != nil {
			return err
		}
		loads = append(loads, loaded)
	}
	// The control plane listens once every service has put its state in
	// the health registry: before, /api/v1/health answered "ok" in the
	// moment before the region's states were there, and a task created
	// then found its region unknown (CI, TestCLIAgainstServeAndRestartKeepsTasks).
	if startControlPlane != nil {
		startControlPlane()
	}
	if o.onReady != nil {
		o.onReady()
	}
	mr := newMemRelease(st, log, loads...)
	g.Go(func() error { mr.run(gctx); return nil })
	log.Info("lpmos serving", "roles", o.role, "data_dir", o.dataDir, "region", o.regionID, "startup", time.Since(start).Round(time.Millisecond))
	err = g.Wait()
	log.Info("lpmos stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ensureAdminToken creates the operator token on first start and writes it
// to <data-dir>/admin.token (0600); only its hash is kept in etcd.
func ensureAdminToken(ctx context.Context, st *store.Store, dataDir string, log *slog.Logger) error {
	path := filepath.Join(dataDir, "admin.token")
	tok, created, err := st.EnsureAdminToken(ctx)
	if err != nil {
		return err
	}
	if created {
		if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("write admin token: %w", err)
		}
		log.Info("created admin token: use it as 'Authorization: Bearer <token>' or let the CLI find it", "path", path)
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		// A member that joined a cluster shares the token the first member
		// created; only that member's data dir has it in plain text.
		log.Info("the cluster's admin token is not in this data dir: use the admin.token of the member that created it, or LPMOS_TOKEN", "path", path)
		return nil
	}
	log.Info("admin token", "path", path)
	return nil
}

// writeFileAtomic writes via a temp file and rename, so a crash never
// leaves half a token behind.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}

// watchStoreHealth probes etcd every few seconds so /api/v1/health says
// when writes would fail (for example when quorum is lost).
func watchStoreHealth(ctx context.Context, st *store.Store, reg *health.Registry) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			reg.Set("etcd", health.Stopped, nil)
			return
		case <-t.C:
		}
		if err := st.Health(ctx); err != nil {
			if ctx.Err() != nil {
				continue
			}
			reg.Set("etcd", health.Failed, err)
		} else {
			reg.Set("etcd", health.Running, nil)
		}
	}
}
