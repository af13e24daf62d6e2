package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestRawConn(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/chunked":
			w.Write(bytes.Repeat([]byte("x"), 5000)) // past net/http's buffer: chunked
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, r.Method+" "+r.Header.Get("Authorization")+" "+r.Header.Get("Content-Type")+" "+string(b))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	r := &rawConn{src: "127.0.0.1", addr: addr}
	var body bytes.Buffer
	for i := range 3 {
		req := appendRequest(nil, http.MethodPost, addr, "/p", "Bearer tok", []byte(`{"a":1}`))
		code, err := r.do(req, &body)
		if err != nil || code != http.StatusAccepted || body.String() != `POST Bearer tok application/json {"a":1}` {
			t.Fatalf("request %d: %d %q %v", i, code, body.String(), err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 requests on %d connections, want 1 kept alive", n)
	}
	// The server closes the connection after this answer: the next request dials again.
	if code, err := r.do(appendRequest(nil, http.MethodGet, addr, "/close", "", nil), &body); err != nil || code != http.StatusAccepted {
		t.Fatalf("close: %d %v", code, err)
	}
	if code, err := r.do(appendRequest(nil, http.MethodGet, addr, "/p", "", nil), &body); err != nil || code != http.StatusAccepted || body.String() != "GET   " {
		t.Fatalf("after close: %d %q %v", code, body.String(), err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections after the server closed one, want 2", n)
	}
	// A connection the server dropped while idle is dialled again once.
	srv.CloseClientConnections()
	if code, err := r.do(appendRequest(nil, http.MethodGet, addr, "/p", "", nil), &body); err != nil || code != http.StatusAccepted {
		t.Fatalf("after the server dropped the connection: %d %v", code, err)
	}
	if _, err := r.do(appendRequest(nil, http.MethodGet, addr, "/chunked", "", nil), &body); !errors.Is(err, errAnswer) {
		t.Errorf("chunked answer: %v, want errAnswer", err)
	}
}
