package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	// (defaults http://127.0.0.1:2379 and http://127.0.0.1:2380).
	ClientURL string
	PeerURL   string
	// ReadyTimeout bounds how long Open waits for the member to be ready.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
}

// Store is lpmos's only source of state: a thin typed layer over etcd.
type Store struct {
	cli  *clientv3.Client
	etcd *embed.Etcd // nil when using external endpoints
	log  *slog.Logger
}

// Open starts the embedded etcd member (or connects to external endpoints)
// and returns a ready store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Endpoints) > 0 {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.New(newSlogCore(cfg.Logger.With("component", "etcd-client"))),
			Context:     ctx,
		})
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
		return &Store{cli: cli, log: cfg.Logger}, nil
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
		cfg.ClientURL = "http://127.0.0.1:2379"
	}
	if cfg.PeerURL == "" {
		cfg.PeerURL = "http://127.0.0.1:2380"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	curl, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("store: client url %q: %w", cfg.ClientURL, err)
	}
	purl, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("store: peer url %q: %w", cfg.PeerURL, err)
	}
	dir := filepath.Join(cfg.DataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "removed")); err == nil {
		return nil, fmt.Errorf("store: %s belongs to a member that was removed from its cluster; delete the data dir or join again with a new one", cfg.DataDir)
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = dir
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = cfg.Name + "=" + purl.String()
	ec.InitialClusterToken = "lpmos"
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	ec.ListenMetricsUrls = nil
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(cfg.Logger.With("component", "etcd"))))

	start := time.Now()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("store: start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd failed: %w", err)
	case <-time.After(cfg.ReadyTimeout):
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd not ready after %s", cfg.ReadyTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("store: start embedded etcd: %w", ctx.Err())
	}
	cfg.Logger.Info("store: embedded etcd ready", "dir", dir, "client_url", cfg.ClientURL,
		"peer_url", cfg.PeerURL, "took", time.Since(start).Round(time.Millisecond))
	return &Store{cli: v3client.New(e.Server), etcd: e, log: cfg.Logger}, nil
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
		return fmt.Errorf("etcd read: %w", err)
	}
	return nil
}

// Close stops the client and, when embedded, the etcd member.
func (s *Store) Close() error {
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
	log    *slog.Logger
	fields []zapcore.Field
}

func newSlogCore(log *slog.Logger) zapcore.Core {
	return zapcore.NewSamplerWithOptions(&slogCore{log: log}, time.Second, 10, 1000)
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
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
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
