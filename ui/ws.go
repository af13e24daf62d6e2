package ui

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Keepalive and write limits of /ws.
const (
	wsPingInterval = 25 * time.Second
	wsWriteTimeout = 10 * time.Second
)

// serveWS upgrades an authenticated request to a WebSocket and streams the
// hub's messages: first a snapshot, then every change. The origin must be
// this host (coder/websocket's default check); browsers authenticate with
// the session cookie, CLI and benchmark clients with the bearer token.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.operatorAuth(w, r); !ok { // any operator credential; read-only may watch
		return
	}
	if !wsOriginAllowed(w, r) { // ui/ws_extra.go: the JSON error, not the library's plain text
		return
	}
	filter, err := wsFilter(r) // ui/ws_filter.go
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	// No permessage-deflate: every client gets the same prepared frame.
	// The library writes its control frames through hj.conn, the hub's
	// messages are written as frames encoded once per event (ui/ws_conn.go).
	hj := &wsHijack{ResponseWriter: w}
	conn, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		s.log.Warn("websocket refused", "remote", r.RemoteAddr, "error", err)
		return // Accept wrote the answer
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4096)
	// The page sends nothing; CloseRead answers pings and notices closes.
	ctx := conn.CloseRead(r.Context())
	go s.closeWhenCredentialEnds(ctx, r, conn) // ui/ws_auth.go

	// The pool's workers (ui/ws_writer.go) write to the connection while
	// it keeps up; this goroutine takes over when its socket is full.
	sub, err := s.hub.subscribe(ctx, filter, hj.conn)
	if err != nil {
		conn.Close(websocket.StatusTryAgainLater, "live updates are not ready")
		return
	}
	defer s.hub.Unsubscribe(sub)

	// One timer per connection bounds every blocking write: if a write
	// blocks for wsWriteTimeout, the timer closes the connection, which
	// ends the write.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stuck := time.AfterFunc(time.Hour, func() { cancel(); _ = conn.CloseNow() })
	stuck.Stop()
	defer stuck.Stop()
	write := func(frames [][]byte) error {
		stuck.Reset(wsWriteTimeout)
		err := hj.conn.writeFrames(frames)
		stuck.Stop()
		return err
	}

	// The loop waits on the queue's signal alone: a hand-off from the
	// pool, the hub's drop, the end of the connection and the ping timer
	// poke it.
	var pingDue atomic.Bool
	ping := time.AfterFunc(wsPingInterval, func() { pingDue.Store(true); sub.q.wake() })
	defer ping.Stop()
	stopWake := context.AfterFunc(ctx, sub.q.wake)
	defer stopWake()
	for {
		<-sub.q.signal
		select {
		case <-sub.Done():
			// The hub stopped (a slow client is resynced, not dropped).
			// The client reconnects and resyncs from a snapshot.
			conn.Close(websocket.StatusTryAgainLater, "live updates restarting: reconnect to resync")
			return
		default:
		}
		if ctx.Err() != nil {
			return
		}
		if carry, ok := sub.q.takeHandoff(); ok {
			// This goroutine owns the queue until it is empty.
			if err := sub.q.out.writeOwned(carry, write); err != nil {
				return
			}
		}
		if pingDue.Swap(false) {
			pctx, cancel := context.WithTimeout(wctx, wsWriteTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
			ping.Reset(wsPingInterval)
		}
	}
}
