package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// --pprof-addr serves Go's profiles (net/http/pprof: heap, CPU,
// goroutines, ...) on a separate listener for finding where memory and
// CPU go. It is off by default and only binds a loopback address: the
// profiles expose the process's internals (and a CPU profile costs CPU),
// so they are never offered on a network the operator does not control.
// Reach it from elsewhere through an SSH tunnel.

// checkPprofAddr refuses an address that is not a loopback IP or
// "localhost" with an explicit port.
func checkPprofAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("--pprof-addr %q: give a port, e.g. 127.0.0.1:6060", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--pprof-addr %q: only a loopback address (127.0.0.1, ::1, localhost) is allowed; the profiles expose the process's internals", addr)
	}
	return nil
}

// pprofHandler is net/http/pprof's handlers on their usual paths.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// listenPprof binds addr (checked by checkPprofAddr; "localhost" must
// resolve to loopback addresses only).
func listenPprof(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr: listen on %s: %w", addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("--pprof-addr %s: bound %s, which is not loopback", addr, ln.Addr())
	}
	return ln, nil
}

// servePprof serves the profiles on ln until ctx ends.
func servePprof(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
	log.Info("pprof profiles on loopback", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("pprof: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pprof: shutdown: %w", err)
	}
	return nil
}
