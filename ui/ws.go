package ui

import (
	"context"
	"fmt"
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
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		s.log.Warn("websocket refused", "remote", r.RemoteAddr, "error", err)
		return // Accept wrote the answer
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4096)
	// The page sends nothing; CloseRead answers pings and notices closes.
	ctx := conn.CloseRead(r.Context())
	go s.closeWhenCredentialEnds(ctx, r, conn) // ui/ws_auth.go

	sub, err := s.hub.subscribe(ctx, filter, false) // read with sub.next: no pump goroutine
	if err != nil {
		conn.Close(websocket.StatusTryAgainLater, "live updates are not ready")
		return
	}
	defer s.hub.Unsubscribe(sub)

	// One timer per connection bounds every write: if a write blocks for
	// wsWriteTimeout, the timer closes the connection, which ends the
	// write. Writes get a context without Done, so the library arms no
	// per-write context.AfterFunc (an allocation and a lock on the
	// parent context per message per client); a message costs a queue
	// pop, a timer reset and the write system call.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stuck := time.AfterFunc(time.Hour, func() { cancel(); _ = conn.CloseNow() })
	stuck.Stop()
	defer stuck.Stop()
	noDone := context.WithoutCancel(ctx)
	write := func(msg []byte) error {
		stuck.Reset(wsWriteTimeout)
		err := conn.Write(noDone, websocket.MessageText, msg)
		stuck.Stop()
		if err != nil {
			return fmt.Errorf("websocket write: %w", err)
		}
		return nil
	}

	// The loop waits on the queue's signal alone (a one-channel receive,
	// not a four-way select per message): the hub's drop, the end of the
	// connection and the ping timer poke the same signal.
	var pingDue atomic.Bool
	ping := time.AfterFunc(wsPingInterval, func() { pingDue.Store(true); sub.q.wake() })
	defer ping.Stop()
	stopWake := context.AfterFunc(ctx, sub.q.wake)
	defer stopWake()
	for {
		if msg, ok := sub.q.pop(); ok { // the client's queue (ui/hub_queue.go)
			if err := write(withFreshServerTime(msg, time.Now())); err != nil { // ui/ws_extra.go
				return
			}
			continue
		}
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
		if pingDue.Swap(false) {
			pctx, cancel := context.WithTimeout(wctx, wsWriteTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
			ping.Reset(wsPingInterval)
			continue
		}
		<-sub.q.signal
	}
}
