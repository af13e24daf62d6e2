package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// The raft log the embedded member holds in memory: entries since its
// last snapshot plus the catch-up entries kept for slow followers (see
// where they are set in Open).
const (
	snapshotCount          = 1000
	snapshotCatchUpEntries = 1000
)

// Config says where the store keeps its data: an embedded etcd member in
// DataDir, or an external cluster at Endpoints.
type Config struct {
	// DataDir holds the embedded member's data (DataDir/etcd).
	DataDir string
	// Endpoints, when set, connect to an external etcd instead of starting
	// an embedded member.
	Endpoints []string
	// Name of the embedded member (default "lpmos").
	Name string
	// ClientURL and PeerURL are the embedded member's listeners
	// (defaults https://127.0.0.1:2379 and https://127.0.0.1:2380). Both
	// are always https with mutual TLS: certificates come from the cluster
	// CA in DataDir/pki, created by the first member.
	ClientURL string
	PeerURL   string
	// ClusterState is "new" (default: a first start creates a one-member
	// cluster and its CA) or "existing" (a member that joins: its PKI
	// files are already in DataDir/pki and InitialCluster lists every
	// member, learners included). Ignored on restart (DataDir/etcd/member
	// exists).
	ClusterState   string
	InitialCluster string
	// CAFile, CertFile and KeyFile are the client TLS files for external
	// Endpoints (optional).
	CAFile, CertFile, KeyFile string
	// ReadyTimeout bounds how long Open waits for the member to be ready.
	ReadyTimeout time.Duration
	Logger       *slog.Logger

	// Space: the embedded member's backend quota, compaction, defrag and
	// the NOSPACE alarm (store/maintenance.go; zero values pick defaults).
	Space SpaceConfig
	// MaxTaskEvents bounds each task's event history (default
	// DefaultMaxTaskEvents): past it the oldest events are dropped and the
	// drop is recorded (store/events_bound.go).
	MaxTaskEvents int
	// MemberCertTTL is the lifetime of the member certificates this member
	// issues and renews (default pki.DefaultMemberLifetime, 7 days;
	// store/membercerts.go).
	MemberCertTTL time.Duration
}

// Store is lpmos's only source of state: a thin typed layer over etcd.
type Store struct {
	cli    *clientv3.Client
	kvc    etcdserverpb.KVClient    // cli's raw KV client when it has no connection (in process); see kvClient
	leases etcdserverpb.LeaseClient // cli's raw lease client when in process (store/keepalive.go)
	etcd   *embed.Etcd              // nil when using external endpoints
	log    *slog.Logger

	// Embedded member only.
	cfg      Config
	pkiDir   pki.Dir
	ca       atomic.Pointer[pki.CA] // swapped only by tests acting as a joined member; read by background loops
	tls      transport.TLSInfo
	removed  atomic.Bool // etcd said this member was removed
	ka       keepAlives  // region lease keepalives, halted before this member stops (store/keepalive.go)
	closing  atomic.Bool
	lost     chan struct{} // closed when the member stops on its own
	lostErr  error
	remoteMu sync.Mutex
	remote   map[string]*clientv3.Client // TLS clients to the other members' client URLs (memberStatus)
	// The embedded member's logger and its clients' (store/etcd.go).
	etcdZap, clientZap *zap.Logger

	// clusterKey seals the CA key in etcd (store/cakey.go); nil on a
	// member that joined before sealing existed.
	clusterKey []byte

	space     SpaceConfig // defaults applied
	maxEvents int
	spaceMu   sync.Mutex
	spaceNow  SpaceStatus // last measurement of the maintenance loop
	defragRev int64       // revision at the last defrag (maintenance loop only)
	// The maintenance loop's estimate of what a defrag would give back
	// (store/dbpacked.go), and when it defragmented last.
	frag frag
	// foldRead runs between a fold's read and its write (tests: a
	// concurrent writer); nil in production.
	foldRead func()
	foldLog  foldLog      // the folds since the newest disk snapshot (store/raftturnover.go)
	turns    atomic.Int64 // raft log turned past a fold (FoldTurns)

	live      liveFeed           // accepted progress not stored yet, for this process's watchers (store/live.go)
	watches   watchHub           // the one etcd watch every watcher of this process follows (store/sharedwatch.go)
	index     taskIndex          // task summaries for lists (store/taskindex.go), started by the first list
	indexStop context.CancelFunc // set with index.started, under index.mu

	// Member certificate renewal and CRL loops (store/membercerts.go).
	certsStop context.CancelFunc
	certsDone sync.WaitGroup
}

// Open starts the embedded etcd member (or connects to external endpoints)
// and returns a ready store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Endpoints) > 0 {
		ccfg := clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.New(newSlogCore(cfg.Logger.With("component", "etcd-client"), nil)),
			Context:     ctx,
		}
		if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
			tc, err := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}.ClientConfig()
			if err != nil {
				return nil, fmt.Errorf("etcd client TLS (--etcd-ca, --etcd-cert, --etcd-key): %w", err)
			}
			ccfg.TLS = tc
		}
		cli, err := clientv3.New(ccfg)
		if err != nil {
			return nil, fmt.Errorf("connect to etcd %v: %w", cfg.Endpoints, err)
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := cli.Get(sctx, "/health-probe"); err != nil {
			cli.Close()
			return nil, fmt.Errorf("reach etcd %v: %w", cfg.Endpoints, err)
		}
		cfg.Logger.Info("store: using external etcd", "endpoints", cfg.Endpoints)
		s := &Store{cli: cli, log: cfg.Logger}
		s.applySpaceDefaults(cfg)
		return s, nil
	}
	return openEmbedded(ctx, cfg)
}

func openEmbedded(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("store: data dir is required for the embedded etcd member")
	}
	if cfg.Name == "" {
		cfg.Name = "lpmos"
	}
	if cfg.ClientURL == "" {
		cfg.ClientURL = "https://127.0.0.1:2379"
	}
	if cfg.PeerURL == "" {
		cfg.PeerURL = "https://127.0.0.1:2380"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	curl, err := parseMemberURL("client", cfg.ClientURL)
	if err != nil {
		return nil, err
	}
	purl, err := parseMemberURL("peer", cfg.PeerURL)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "removed")); err == nil {
		return nil, fmt.Errorf("store: %s belongs to a member that was removed from its cluster; delete the data dir or join again with a new one: %w", cfg.DataDir, ErrRemoved)
	}
	restart := HoldsMember(dir)
	joining := cfg.ClusterState == embed.ClusterStateFlagExisting
	if joining && !restart && cfg.InitialCluster == "" {
		return nil, errors.New("store: joining an existing cluster needs its initial cluster")
	}

	// Mutual TLS for peers and clients, from the cluster CA.
	pdir := pki.Dir(filepath.Join(cfg.DataDir, "pki"))
	// A first start creates the CA; so does the restart of a member from
	// before mutual TLS (a single member: joining did not exist then).
	certTTL := cfg.MemberCertTTL
	if certTTL <= 0 {
		certTTL = pki.DefaultMemberLifetime
	}
	ca, err := pdir.EnsureFor(cfg.Name, []string{curl.Hostname(), purl.Hostname()}, !joining, certTTL)
	if err != nil {
		return nil, fmt.Errorf("store: member certificates: %w", err)
	}
	// The revocation list etcd checks at every handshake (removed members'
	// certificates; store/membercerts.go).
	if err := ensureCRLFile(pdir, ca); err != nil {
		return nil, fmt.Errorf("store: certificate revocation list: %w", err)
	}
	tlsInfo := transport.TLSInfo{
		CertFile:       pdir.Path(pki.MemberCertFile),
		KeyFile:        pdir.Path(pki.MemberKeyFile),
		TrustedCAFile:  pdir.Path(pki.CACertFile),
		ClientCertAuth: true,
		CRLFile:        pdir.Path(CRLFile),
	}
	s := &Store{log: cfg.Logger, cfg: cfg, pkiDir: pdir, tls: tlsInfo, lost: make(chan struct{})}
	// One zap logger per component: each carries a sampler of 448 KiB
	// (zap's counters), which the purge loops and every TLS client share.
	s.etcdZap = zap.New(newSlogCore(cfg.Logger.With("component", "etcd"), s.markRemoved))
	s.clientZap = newZap(cfg.Logger.With("component", "etcd-client"))
	s.ca.Store(ca)
	s.applySpaceDefaults(cfg)
	if err := s.ensureClusterKey(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s.renewBeforeStart() // store/membercerts.go: after a long outage

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = dir
	ec.ListenClientUrls = []url.URL{*curl}
	if h := curl.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "0.0.0.0" && h != "::" {
		// Local tools reach the member on loopback too.
		ec.ListenClientUrls = append(ec.ListenClientUrls, url.URL{Scheme: "https", Host: net.JoinHostPort("127.0.0.1", curl.Port())})
	}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.ClientTLSInfo = tlsInfo
	ec.PeerTLSInfo = tlsInfo
	ec.InitialClusterToken = "lpmos"
	if joining {
		ec.ClusterState = embed.ClusterStateFlagExisting
		ec.InitialCluster = cfg.InitialCluster
	} else {
		ec.ClusterState = embed.ClusterStateFlagNew
		ec.InitialCluster = cfg.Name + "=" + purl.String()
	}
	ec.AutoCompactionMode = "periodic"
	// A retention under an hour also compacts that often (etcd's periodic
	// compactor); watchers that fall behind resync from a snapshot.
	ec.AutoCompactionRetention = s.space.CompactionRetention.String()
	ec.QuotaBackendBytes = s.space.QuotaBytes
	disableEtcdPurge(ec) // lpmos purges: store/purge.go
	// etcd keeps the raft log in memory back to its last snapshot plus the
	// catch-up entries (10,000 + 5,000 by default), and a restart replays
	// the WAL since the snapshot into that memory. lpmos's entries are large
	// (hardware reports, batched progress), so that log was most of the
	// heap of a member with 10,000 tasks. Snapshots are cheap here (the data
	// is in bbolt; a snapshot is raft state), so they are taken 10x as
	// often; a follower more than SnapshotCatchUpEntries behind receives the
	// database instead of entries (BenchmarkReopenedMemberHeap).
	ec.SnapshotCount = snapshotCount
	ec.SnapshotCatchUpEntries = snapshotCatchUpEntries
	ec.GRPCAdditionalServerOptions = append(ec.GRPCAdditionalServerOptions,
		grpc.ChainUnaryInterceptor(recoverRemovedMember(cfg.Logger.With("component", "etcd"), s.markRemoved)))
	ec.ListenMetricsUrls = nil
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(s.etcdZap)

	start := time.Now()
	var e *embed.Etcd
	if joining && !restart {
		// A first start of a joining member: a member that just started
		// may not have decided the cluster version yet (store/joinversion.go).
		e, err = startJoining(ctx, cfg.Logger, joinVersionWait,
			func() (*embed.Etcd, error) { return embed.StartEtcd(ec) },
			func(ctx context.Context) (bool, string) {
				hc, herr := peerHTTPClient(tlsInfo)
				if herr != nil {
					return false, herr.Error()
				}
				defer hc.CloseIdleConnections()
				return remoteVersionsTransient(ctx, hc, cfg.InitialCluster, cfg.Name)
			})
	} else {
		e, err = embed.StartEtcd(ec)
	}
	if err != nil {
		if strings.Contains(err.Error(), "permanently removed") || strings.Contains(err.Error(), "has already been removed") {
			s.tombstone()
			return nil, fmt.Errorf("store: this member was removed from its cluster (data dir %s is now tombstoned); join again with a new data dir: %w", cfg.DataDir, ErrRemoved)
		}
		return nil, fmt.Errorf("store: start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd failed: %w", err)
	case <-e.Server.StopNotify():
		e.Close()
		if s.removed.Load() {
			s.tombstone()
			return nil, fmt.Errorf("store: this member was removed from its cluster (data dir %s is now tombstoned); join again with a new data dir: %w", cfg.DataDir, ErrRemoved)
		}
		return nil, errors.New("store: embedded etcd stopped while starting (see the etcd warnings above)")
	case <-time.After(cfg.ReadyTimeout):
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd not ready after %s (a joining or restarting member needs a quorum of the cluster's members up)", cfg.ReadyTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("store: start embedded etcd: %w", ctx.Err())
	}
	s.etcd = e
	s.startPurge(dir, e.Server.StoppingNotify())
	if !e.Server.IsLearner() {
		in := v3client.New(e.Server)
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := s.setupAuth(actx, in)
		cancel()
		_ = in.Close()
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	// lpmos's own client calls this member in process, as the etcd user
	// of its certificate's CN (store/memberauth.go, store/inproc.go).
	if s.cli, s.kvc, s.leases, err = s.selfClient(); err != nil {
		e.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	cfg.Logger.Info("store: embedded etcd ready", "dir", dir, "name", cfg.Name, "client_url", cfg.ClientURL,
		"peer_url", cfg.PeerURL, "restart", restart, "joining", joining, "took", time.Since(start).Round(time.Millisecond))
	if e.Server.IsLearner() {
		pctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
		err := s.promoteSelf(pctx)
		cancel()
		if err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	if restart {
		s.fixPeerURL(ctx, purl.String())
	}
	if ca.Key != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.publishCA(pctx); err != nil {
			cfg.Logger.Warn("store: could not share the cluster CA in etcd; joins through other members fail until it is", "error", err)
		}
		cancel()
	}
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := s.migrateCARecord(mctx); err != nil {
		cfg.Logger.Warn("store: could not seal the plain CA key in etcd; it stays readable by etcd clients until a member with the cluster key restarts", "error", err)
	}
	cancel()
	s.haltKeepAlivesOnStop(e.Server.StoppingNotify())
	go s.watchMember()
	s.startMemberCerts() // store/membercerts.go
	return s, nil
}

// fixPeerURL updates this member's peer URL in the membership when it
// changed (a member from before mutual TLS was advertised as http://).
func (s *Store) fixPeerURL(ctx context.Context, peerURL string) {
	id := s.etcd.Server.MemberID()
	m := s.etcd.Server.Cluster().Member(id)
	if m == nil || (len(m.PeerURLs) == 1 && m.PeerURLs[0] == peerURL) {
		return
	}
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.cli.MemberUpdate(uctx, uint64(id), []string{peerURL}); err != nil {
		s.log.Warn("store: could not update this member's peer URL", "from", m.PeerURLs, "to", peerURL, "error", err)
		return
	}
	s.log.Info("store: updated this member's peer URL", "from", m.PeerURLs, "to", peerURL)
}

// parseMemberURL checks an embedded member URL: https only (mutual TLS).
func parseMemberURL(kind, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("store: %s url %q: %w", kind, raw, err)
	}
	if u.Scheme != "https" || u.Port() == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("store: %s url %q: want https://HOST:PORT (members always talk mutual TLS)", kind, raw)
	}
	return u, nil
}

// watchMember notices the embedded member stopping on its own (removed
// from the cluster, or a fatal error), tombstones a removed member's data
// dir, and closes Lost.
func (s *Store) watchMember() {
	<-s.etcd.Server.StopNotify()
	if s.closing.Load() {
		return
	}
	if s.removed.Load() || s.etcd.Server.IsIDRemoved(uint64(s.etcd.Server.MemberID())) {
		s.tombstone()
		s.lostErr = fmt.Errorf("this member was removed from the cluster; its data dir %s is tombstoned (join again with a new data dir): %w", s.cfg.DataDir, ErrRemoved)
	} else {
		s.lostErr = errors.New("the embedded etcd member stopped unexpectedly (see the etcd warnings above)")
	}
	s.log.Error("store: " + s.lostErr.Error())
	close(s.lost)
}

// Lost is closed when the embedded member stops on its own; LostErr then
// says why. It is never closed for an external store or after Close.
func (s *Store) Lost() <-chan struct{} {
	if s.lost == nil {
		return nil
	}
	return s.lost
}

// LostErr is the reason Lost was closed (nil before).
func (s *Store) LostErr() error {
	select {
	case <-s.Lost():
		return s.lostErr
	default:
		return nil
	}
}

// markRemoved records that etcd said this member was removed from its
// cluster and tombstones the data dir at once: a removed member stops
// soon after, and etcd may panic on its way down (a read racing its closed
// backend), which must not leave a data dir that looks alive.
func (s *Store) markRemoved() {
	if s.removed.CompareAndSwap(false, true) {
		s.tombstone()
	}
}

// tombstone marks the data dir as a removed member's (Open refuses it).
func (s *Store) tombstone() {
	path := filepath.Join(s.cfg.DataDir, "etcd", "removed")
	if err := Tombstone(s.cfg.DataDir); err != nil {
		s.log.Error("store: could not tombstone the data dir of a removed member", "path", path, "error", err)
	}
}

// Tombstone marks dataDir as belonging to a member removed from its
// cluster, so Open refuses to start it again.
func Tombstone(dataDir string) error {
	dir := filepath.Join(dataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tombstone %s: %w", dataDir, err)
	}
	msg := fmt.Sprintf("removed from its cluster at %s\n", time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, "removed"), []byte(msg), 0o600); err != nil {
		return fmt.Errorf("tombstone %s: %w", dataDir, err)
	}
	return nil
}

// kvClient is the raw KV client under s.cli, for pre-built requests.
func (s *Store) kvClient() etcdserverpb.KVClient {
	if s.kvc != nil {
		return s.kvc
	}
	return etcdserverpb.NewKVClient(s.cli.ActiveConnection())
}

// Client exposes the etcd client for packages that need raw access
// (leases, membership). Keys are still built with this package's helpers.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Embedded reports whether this process runs its own etcd member.
func (s *Store) Embedded() bool { return s.etcd != nil }

// Health checks that the store answers a linearizable read.
func (s *Store) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.cli.Get(ctx, "/health-probe"); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "deadline exceeded") {
			return fmt.Errorf("etcd writes are failing: no quorum or no leader (a linearizable read timed out); machines this region already knows keep booting: %w", err)
		}
		return fmt.Errorf("etcd read: %w", err)
	}
	return nil
}

// Close stops the client and, when embedded, the etcd member.
func (s *Store) Close() error {
	s.closing.Store(true)
	s.index.mu.Lock()
	if s.indexStop != nil {
		s.indexStop()
	}
	s.index.mu.Unlock()
	s.stopMemberCerts()
	s.closeMemberClients(nil)
	s.haltKeepAlives()
	err := s.cli.Close()
	if s.etcd != nil {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("store: close client: %w", err)
	}
	return nil
}

// slogCore forwards etcd's zap logs to slog. Only warnings and worse pass:
// etcd logs ~60 info lines per start/stop, which drown lpmos's own logs.
// It is wrapped in a sampler so a misbehaving member cannot flood the log.
type slogCore struct {
	log       *slog.Logger
	fields    []zapcore.Field
	onRemoved func() // called when etcd says this member was removed
}

func newSlogCore(log *slog.Logger, onRemoved func()) zapcore.Core {
	return zapcore.NewSamplerWithOptions(&slogCore{log: log, onRemoved: onRemoved}, time.Second, 10, 1000)
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fields...), onRemoved: c.onRemoved}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// routineEtcdLogs are warnings etcd logs on every normal start and stop of
// an embedded member; they say nothing an operator can act on.
var routineEtcdLogs = []string{
	"Running http and grpc server on single port",
	"simple token is not cryptographically signed",
	"setting up serving from embedded etcd failed",
	"stopping insecure grpc server due to error",
	"stopped insecure grpc server due to error",
	"stopping secure grpc server due to error",
	"stopped secure grpc server due to error",
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	for _, m := range routineEtcdLogs {
		if strings.HasPrefix(e.Message, m) {
			return nil
		}
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
		if c.onRemoved != nil && k == "error" && strings.Contains(fmt.Sprint(v), "permanently removed") {
			c.onRemoved()
		}
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// newZap is a zap logger that writes to log through the quiet slog core.
func newZap(log *slog.Logger) *zap.Logger { return zap.New(newSlogCore(log, nil)) }

// HoldsMember reports whether dir, an etcd data directory, holds a member
// (its WAL exists): such a directory restarts that member; joining or
// starting a new cluster needs an empty one. The layout is etcd's own
// (storage/datadir), not rebuilt here.
func HoldsMember(dir string) bool {
	_, err := os.Stat(datadir.ToWALDir(dir))
	return err == nil
}
