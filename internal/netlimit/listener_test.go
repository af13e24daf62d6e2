package netlimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// served is a Limiter-wrapped loopback listener whose accepted connections
// are held open until the test ends.
type served struct {
	l    *Limiter
	addr string
	mu   sync.Mutex
	held []net.Conn
}

func serve(t *testing.T, cfg Config) *served {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{l: New(cfg), addr: inner.Addr().String()}
	ln := s.l.Listen(inner)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.held = append(s.held, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		s.mu.Lock()
		for _, c := range s.held {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// open reports whether the server kept c (no answer, no EOF within 200ms).
func open(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestPerSourceCap(t *testing.T) {
	s := serve(t, Config{MaxPerSource: 2, PlainHTTP: true})
	a1, a2, a3 := dialFrom(t, "127.0.0.2", s.addr), dialFrom(t, "127.0.0.2", s.addr), dialFrom(t, "127.0.0.2", s.addr)
	b1 := dialFrom(t, "127.0.0.3", s.addr)
	for name, c := range map[string]net.Conn{"a1": a1, "a2": a2, "b1": b1} {
		if !open(c) {
			t.Errorf("%s was closed", name)
		}
	}
	_ = a3.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(a3), nil)
	if err != nil {
		t.Fatalf("the third connection from one source: %v, want a 503", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"error":"too many connections`) {
		t.Errorf("refusal: %d %q", resp.StatusCode, body)
	}
	st := s.l.Stats()
	if st.Open != 3 || st.Sources != 2 || st.Refused != 1 || st.Accepted != 3 {
		t.Errorf("stats %+v", st)
	}
}

func waitStats(t *testing.T, l *Limiter, ok func(Stats) bool) {
	t.Helper()
	for i := 0; i < 100 && !ok(l.Stats()); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFullListenerEvictsTheBusiestSource(t *testing.T) {
	s := serve(t, Config{MaxConns: 4})
	var flood []net.Conn
	for range 4 {
		flood = append(flood, dialFrom(t, "127.0.0.2", s.addr))
	}
	waitStats(t, s.l, func(st Stats) bool { return st.Open == 4 })
	real := dialFrom(t, "127.0.0.1", s.addr)
	if !open(real) {
		t.Fatal("a client from another address was refused while one address held every connection")
	}
	if open(flood[0]) {
		t.Error("the flood's oldest connection was not evicted")
	}
	for i, c := range flood[1:] {
		if !open(c) {
			t.Errorf("flood connection %d closed, only the oldest should be", i+1)
		}
	}
	more := dialFrom(t, "127.0.0.2", s.addr)
	if open(more) {
		t.Error("the busiest source got another connection on a full listener")
	}
	st := s.l.Stats()
	if st.Open != 4 || st.Evicted != 1 || st.Refused != 1 {
		t.Errorf("stats %+v, want 4 open, 1 evicted, 1 refused", st)
	}
}

// flaky fails its first n accepts with err.
type flaky struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (f *flaky) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: f.err}
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func TestAcceptErrorsBackOffAndRecover(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := New(Config{Name: "test"})
			ln := l.Listen(&flaky{Listener: inner, n: 4, err: errno})
			defer ln.Close()
			c := dialFrom(t, "127.0.0.1", inner.Addr().String())
			start := time.Now()
			got, err := ln.Accept()
			if err != nil {
				t.Fatalf("Accept gave up: %v", err)
			}
			got.Close()
			c.Close()
			// 5+10+20+40 ms of back-off.
			if d := time.Since(start); d < 75*time.Millisecond {
				t.Errorf("no back-off: %v", d)
			}
			if st := l.Stats(); st.AcceptErrors != 4 || st.Accepted != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	t.Run("closing ends a back-off", func(t *testing.T) {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := New(Config{}).Listen(&flaky{Listener: inner, n: 1 << 30, err: syscall.EMFILE})
		errc := make(chan error, 1)
		go func() { _, err := ln.Accept(); errc <- err }()
		time.Sleep(50 * time.Millisecond)
		ln.Close()
		select {
		case err := <-errc:
			if err == nil {
				t.Error("Accept returned a connection")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Accept did not return after Close")
		}
	})
}

// The wrapped connection keeps what net/http looks for on a *net.TCPConn.
func TestConnKeepsTCPInterfaces(t *testing.T) {
	var c net.Conn = &conn{}
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("no CloseWrite: net/http would reset instead of finishing an answer")
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("no ReadFrom: downloads would lose sendfile")
	}
}
