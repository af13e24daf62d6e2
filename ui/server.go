// Package ui is the control plane: the REST API under /api/v1, the live
// dashboard and its WebSocket hub.
package ui

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/internal/httpmetrics"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the control plane.
type Config struct {
	Store   *store.Store
	Addr    string // listen address, e.g. ":8080"
	TLSCert string // serve HTTPS when both are set
	TLSKey  string
	Health  *health.Registry
	Version string
	Logger  *slog.Logger
	// Metrics, when set, is the registry /metrics serves, so other services
	// of the process can add theirs; the control plane adds its own to it.
	Metrics *prometheus.Registry
	// Images is where image sources may come from: POST /api/v1/images
	// checks every source against it and reads it (ui/images.go).
	Images imagesrc.Policy
	// GetCertificate, when set (and TLSCert is not), serves HTTPS with the
	// certificate it returns at each handshake (renewal without restart).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Server serves the control plane.
type Server struct {
	cfg     Config
	log     *slog.Logger
	router  chi.Router
	hub     *Hub
	wrapLn  func(net.Listener) net.Listener // connection caps (ui/timeouts.go)
	httpm   *httpmetrics.Metrics            // ui/metrics.go
	tasksm  *taskMetrics                    // ui/taskmetrics.go
	wsCreds credMemo                        // one credential re-check per token for every /ws (ui/ws_auth.go)
	local   localSessions                   // dashboard sessions while etcd is full (ui/session_local.go)
}

// New builds the control plane; Start serves it.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("ui: a store is required")
	}
	if cfg.Health == nil {
		cfg.Health = &health.Registry{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("ui: give both --tls-cert and --tls-key, or neither")
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("service", "control-plane")}
	s.httpm = httpmetrics.New("control-plane", "")
	s.tasksm = newTaskMetrics(cfg.Store, s.log)
	s.hub = NewHub(cfg.Store, HubConfig{Health: cfg.Health, Logger: cfg.Logger})
	cfg.Health.AddSource(s.spaceHealth) // ui/space.go
	index, assets := dashboard()
	r := chi.NewRouter()
	r.Use(s.httpm.Middleware) // requests by route, code, duration
	r.Use(middleware.Recoverer)
	r.Use(securityHeaders)
	r.Use(clearStreamDeadlines) // ui/timeouts.go
	r.Get("/", index)
	r.Handle("/assets/*", assets)
	r.Get("/ws", s.serveWS)
	r.Handle("/metrics", s.metricsHandler())
	r.Route("/api/v1", func(r chi.Router) {
		r.Post("/session", s.login)
		r.Get("/session", s.currentSession)
		r.Delete("/session", s.logout)
		r.Get("/openapi.json", serveOpenAPI) // ui/openapi.go
		s.routesAPI(r)
	})
	s.router = r
	return s, nil
}

// Handler returns the HTTP handler (for tests and embedding). The live
// updates of /ws need the hub running: Start and Serve run it, a caller
// serving Handler itself runs Hub().Run.
func (s *Server) Handler() http.Handler { return s.router }

// Loaded reports whether the start-up loads of Serve are done: the
// live-updates hub's first snapshot and the task metrics' (both from the
// store's task index). app/memrelease.go returns the memory they needed
// to the OS after them.
func (s *Server) Loaded() bool {
	s.hub.mu.Lock()
	hub := s.hub.isReady
	s.hub.mu.Unlock()
	s.tasksm.mu.Lock()
	defer s.tasksm.mu.Unlock()
	return hub && s.tasksm.loaded
}

// Hub returns the live-updates hub behind /ws.
func (s *Server) Hub() *Hub { return s.hub }

// Start listens on cfg.Addr and serves until ctx ends, then shuts down
// gracefully. A listen error is returned at once.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("control plane: listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln, and runs the live-updates hub (one etcd watch for
// every dashboard), until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.cfg.Store.StartTaskIndex() // the lists' summaries (store/taskindex.go), loaded before the first list
	hubCtx, stopHub := context.WithCancel(ctx)
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		_ = s.hub.Run(hubCtx)
	}()
	tmDone := make(chan struct{})
	go func() { defer close(tmDone); s.tasksm.run(hubCtx) }() // ui/taskmetrics.go
	defer func() {
		stopHub()
		<-hubDone
		<-tmDone
	}()
	if s.wrapLn != nil {
		ln = s.wrapLn(ln)
	}
	srv := &http.Server{
		Handler:           s.router,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if s.cfg.TLSCert != "" || s.cfg.GetCertificate != nil {
		scheme = "https"
	}
	if s.cfg.TLSCert == "" && s.cfg.GetCertificate != nil {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.GetCertificate}
	}
	s.cfg.Health.Set("control-plane", health.Running, nil)
	s.cfg.Health.SetDetail("control-plane", scheme+"://"+ln.Addr().String())
	s.log.Info("control plane listening", "addr", ln.Addr().String(), "scheme", scheme)
	errc := make(chan error, 1)
	go func() {
		if scheme == "https" {
			errc <- srv.ServeTLS(ln, s.cfg.TLSCert, s.cfg.TLSKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		s.cfg.Health.Set("control-plane", health.Failed, err)
		return fmt.Errorf("control plane: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	s.cfg.Health.Set("control-plane", health.Stopped, nil)
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("control plane: shutdown: %w", err)
	}
	return nil
}

// requireOperator lets through requests from the operator: the admin token
// as a bearer token, or a dashboard session cookie with, on mutating
// requests, its CSRF token in X-CSRF-Token.
func (s *Server) requireOperator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r2, ok := s.operatorAuth(w, r); ok { // ui/session.go
			next.ServeHTTP(w, r2)
		}
	})
}
