package netlimit

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Config bounds the connections of one listener.
type Config struct {
	// Name names the listener in logs ("control-plane", "agent-api").
	Name string
	// MaxConns caps the open connections of the listener; 0: no cap.
	MaxConns int
	// MaxPerSource caps the open connections of one source address (an
	// IPv4 address or an IPv6 /64); 0: no cap.
	MaxPerSource int
	// PlainHTTP: a refused connection is answered "503" before it is
	// closed (leave false under TLS: the answer would be garbage there).
	PlainHTTP bool
	// Logger receives the refusals and accept errors (rate-limited).
	Logger *slog.Logger
}

// Stats counts what a Limiter did.
type Stats struct {
	Open         int    // connections open now
	Sources      int    // source addresses with a connection open now
	Accepted     uint64 // connections admitted
	Refused      uint64 // connections closed at once: their source was at MaxPerSource, or all were at their fair share of MaxConns
	Evicted      uint64 // connections closed to make room for a source with fewer (MaxConns reached)
	AcceptErrors uint64 // failed accepts (EMFILE and the like), backed off and retried
}

// Limiter caps the connections of the listeners it wraps. Accept never
// blocks on a full table: a connection over a cap is closed at once, so a
// flood from one address cannot stop another address from connecting. When
// MaxConns is reached, a new connection from a source holding fewer
// connections than the busiest source evicts the busiest source's oldest
// connection (fair share) instead of being refused.
type Limiter struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	open  int
	bySrc map[string]*list.List // of *conn, oldest first

	accepted, refused, evicted, acceptErrors atomic.Uint64
	lastLog                                  atomic.Int64 // unix nanos of the last refusal/error log
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Limiter{cfg: cfg, log: cfg.Logger.With("listener", cfg.Name), bySrc: make(map[string]*list.List)}
}

// Stats returns the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	open, sources := l.open, len(l.bySrc)
	l.mu.Unlock()
	return Stats{Open: open, Sources: sources, Accepted: l.accepted.Load(), Refused: l.refused.Load(),
		Evicted: l.evicted.Load(), AcceptErrors: l.acceptErrors.Load()}
}

// Listen wraps ln: its connections count against l's caps.
func (l *Limiter) Listen(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l, closed: make(chan struct{})}
}

// logEvery logs at most once a second: a flood must not flood the log.
func (l *Limiter) logEvery(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn(msg, append(args, "stats", fmt.Sprintf("%+v", l.Stats()))...)
}

type listener struct {
	net.Listener
	l         *Limiter
	closeOnce sync.Once
	closed    chan struct{}
}

func (ln *listener) Close() error {
	ln.closeOnce.Do(func() { close(ln.closed) })
	return ln.Listener.Close()
}

// Accept returns the next admitted connection. A failed accept (out of
// descriptors: EMFILE, ENFILE; ECONNABORTED...) is counted, logged and
// retried after a back-off of 5 ms doubling to 1 s; only closing the
// listener ends Accept.
func (ln *listener) Accept() (net.Conn, error) {
	l := ln.l
	var backoff time.Duration
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			select {
			case <-ln.closed:
				return nil, err
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.acceptErrors.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.logEvery("accept failed: backing off (out of file descriptors? see --max-conns)", "error", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ln.closed:
				t.Stop()
				return nil, err
			case <-t.C:
			}
			continue
		}
		backoff = 0
		if wc := l.admit(c); wc != nil {
			return wc, nil
		}
	}
}

// admit wraps c, or refuses it (closed, nil).
func (l *Limiter) admit(c net.Conn) net.Conn {
	src := SourceKey(c.RemoteAddr().String())
	l.mu.Lock()
	mine := l.bySrc[src]
	n := 0
	if mine != nil {
		n = mine.Len()
	}
	var victim *conn
	refuse := ""
	switch {
	case l.cfg.MaxPerSource > 0 && n >= l.cfg.MaxPerSource:
		refuse = "source at its connection cap"
	case l.cfg.MaxConns > 0 && l.open >= l.cfg.MaxConns:
		// Full: take a connection from the busiest source if it holds
		// more than this one would.
		var busiest *list.List
		for _, q := range l.bySrc {
			if busiest == nil || q.Len() > busiest.Len() {
				busiest = q
			}
		}
		if busiest != nil && busiest.Len() > n+1 {
			victim = busiest.Front().Value.(*conn)
			l.unlink(victim)
		} else {
			refuse = "listener at its connection cap"
		}
	}
	if refuse != "" {
		l.mu.Unlock()
		l.refused.Add(1)
		l.logEvery("connection refused", "reason", refuse, "remote", src)
		l.refuse(c)
		return nil
	}
	wc := &conn{Conn: c, l: l, src: src}
	if mine == nil {
		mine = list.New()
		l.bySrc[src] = mine
	}
	wc.el = mine.PushBack(wc)
	l.open++
	l.mu.Unlock()
	l.accepted.Add(1)
	if victim != nil {
		l.evicted.Add(1)
		l.logEvery("connection evicted to admit another source", "evicted", victim.src, "admitted", src)
		_ = victim.Conn.Close()
	}
	return wc
}

const refusalBody = `{"error":"too many connections: retry in a second"}` + "\n"

func (l *Limiter) refuse(c net.Conn) {
	if l.cfg.PlainHTTP {
		_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s", len(refusalBody), refusalBody)
	}
	_ = c.Close()
}

// unlink removes c from the table; l.mu is held.
func (l *Limiter) unlink(c *conn) {
	if c.el == nil {
		return
	}
	q := l.bySrc[c.src]
	q.Remove(c.el)
	c.el = nil
	if q.Len() == 0 {
		delete(l.bySrc, c.src)
	}
	l.open--
}

type conn struct {
	net.Conn
	l    *Limiter
	src  string
	el   *list.Element // nil once unlinked
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.unlink(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (net/http uses it to finish an
// answer before closing, so the client reads it instead of a reset).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps sendfile/splice for file downloads (net/http copies
// through the connection's io.ReaderFrom).
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// ClearDeadlines lifts the server's read and write timeouts for the
// requests match selects (streams, long-polls, downloads), which the
// connection caps bound instead. Other requests keep them.
func ClearDeadlines(match func(*http.Request) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if match(r) {
				rc := http.NewResponseController(w)
				_ = rc.SetReadDeadline(time.Time{})
				_ = rc.SetWriteDeadline(time.Time{})
			}
			next.ServeHTTP(w, r)
		})
	}
}
