package ui

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// readFrame reads one unmasked server frame: opcode and payload.
func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("frame header %x: want FIN, unmasked", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0] & 0x0f, p, err
}

// A client that does not read fills its socket: the pool's worker hands
// the connection to its goroutine, which writes the rest (the partial
// frame first); control frames written meanwhile (the library's pings)
// never split a frame; every message that does not coalesce arrives in
// order, and the last progress arrives last.
func TestWSWritersSlowClientOrderAndFrames(t *testing.T) {
	t.Parallel() // its own listener, pool and queue
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}

	conn := newWSConn(raw)
	if conn.rc == nil {
		t.Fatal("a TCP connection must allow non-blocking writes")
	}
	var pool wsPool
	q := newOutQueue()
	q.out = &wsOut{conn: conn, pool: &pool, q: q}

	// The connection's goroutine, as in serveWS.
	stop := make(chan struct{})
	ended := make(chan error, 1)
	handoffs := 0
	go func() {
		for {
			select {
			case <-q.signal:
			case <-stop:
				ended <- nil
				return
			}
			if carry, ok := q.takeHandoff(); ok {
				handoffs++
				if err := q.out.writeOwned(carry, conn.writeFrames); err != nil {
					ended <- err
					return
				}
			}
		}
	}()

	// The library's control frames (pings), written meanwhile: they block
	// while the socket is full, as the library's writes do.
	const events, pingEvery = 400, 50
	pinged := make(chan error, 1)
	go func() {
		for range events / pingEvery {
			if _, err := conn.Write([]byte{0x89, 0x00}); err != nil {
				pinged <- err
				return
			}
		}
		pinged <- nil
	}()

	pad := strings.Repeat("x", 1500)
	var want []string
	for i := range events {
		msg := fmt.Sprintf("event-%04d-%s", i, pad)
		b := []byte(msg)
		if !q.pushFrame("t", b, wsTextFrame(b), coalesceNone, 1<<20, 1<<30) {
			t.Fatal("resync asked")
		}
		want = append(want, msg)
		p := []byte(fmt.Sprintf("progress-%04d", i))
		q.pushFrame("t", p, wsTextFrame(p), coalesceProgress, 1<<20, 1<<30)
	}

	r := bufio.NewReader(client)
	var got []string
	lastProgress, pings := "", 0
	for len(got) < events || lastProgress != fmt.Sprintf("progress-%04d", events-1) {
		op, p, err := readFrame(r)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		switch {
		case op == 0x9:
			pings++
		case op != 0x1:
			t.Fatalf("opcode %x", op)
		case strings.HasPrefix(string(p), "event-"):
			got = append(got, string(p))
		case strings.HasPrefix(string(p), "progress-"):
			if string(p) <= lastProgress {
				t.Fatalf("progress %s after %s", p, lastProgress)
			}
			lastProgress = string(p)
		default:
			t.Fatalf("unexpected message %.40q", p)
		}
	}
	if err := <-pinged; err != nil { // the socket has room again
		t.Fatal(err)
	}
	// Once idle, the connection takes the next message at once; the
	// pings not read yet come before it.
	b := []byte("after")
	q.pushFrame("", b, wsTextFrame(b), coalesceNone, 1<<20, 1<<30)
	for {
		op, p, err := readFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		if op == 0x9 {
			pings++
			continue
		}
		if string(p) != "after" {
			t.Fatalf("got %.40q, want the message sent after", p)
		}
		break
	}
	close(stop)
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: %.20q, want %.20q", i, got[i], want[i])
		}
	}
	if pings != events/pingEvery {
		t.Fatalf("%d pings, want %d", pings, events/pingEvery)
	}
	if handoffs == 0 {
		t.Fatal("the full socket never handed the connection to its goroutine")
	}
}

// Messages queued for a connection while its writer was busy go out with
// one system call, in the queue's order: status changes and events all
// there, a task's progress coalesced to its latest (in the place of its
// first unsent one), nothing dropped; then the connection is idle.
func TestWSWritersBatchQueuedInOneWrite(t *testing.T) {
	client, conn, q := loopbackQueue(t)

	// A writer owns the queue (as a worker busy with the previous write):
	// pushes queue up.
	q.busy = true
	push := func(task, msg string, kind uint8) {
		b := []byte(msg)
		if !q.pushFrame(task, b, wsTextFrame(b), kind, 1<<20, 1<<30) {
			t.Fatal("resync asked")
		}
	}
	push("a", "status a installing", coalesceNone)
	push("a", "progress a 10", coalesceProgress)
	push("b", "progress b 5", coalesceProgress)
	push("a", "progress a 20", coalesceProgress) // replaces a 10
	push("", "machine m1", coalesceNone)
	push("b", "status b failed", coalesceNone) // b 5 stays before it
	push("b", "progress b 6", coalesceProgress)
	push("a", "progress a 30", coalesceProgress) // replaces a 20
	want := []string{"status a installing", "progress a 30", "progress b 5", "machine m1", "status b failed", "progress b 6"}

	var w wsWorker
	q.out.deliver(&w)
	if conn.tries != 1 {
		t.Fatalf("%d write system calls, want 1 for the %d queued messages", conn.tries, len(want))
	}
	if q.busy || len(q.items) != 0 {
		t.Fatalf("after delivery: busy %v, %d queued; want idle, empty", q.busy, len(q.items))
	}
	r := bufio.NewReader(client)
	for i, m := range want {
		op, p, err := readFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		if op != 0x1 || string(p) != m {
			t.Fatalf("message %d: opcode %x %q, want text %q", i, op, p, m)
		}
	}

	// Idle again: the next message goes to a pool worker and out alone.
	b := []byte("status a done")
	q.pushFrame("a", b, wsTextFrame(b), coalesceNone, 1<<20, 1<<30)
	op, p, err := readFrame(r)
	if err != nil || op != 0x1 || string(p) != "status a done" {
		t.Fatalf("after idle: %x %q %v", op, p, err)
	}
}

// More queued messages than a batch holds are split: every message
// arrives, in order, over several system calls.
func TestWSWritersBatchBounded(t *testing.T) {
	client, conn, q := loopbackQueue(t)
	q.busy = true
	const n = wsBatchFrames + 10
	for i := range n {
		b := []byte(fmt.Sprintf("event %03d %s", i, strings.Repeat("x", 90)))
		q.pushFrame("t", b, wsTextFrame(b), coalesceNone, 1<<20, 1<<30)
	}
	done := make(chan struct{})
	go func() { // the client reads meanwhile: the socket never fills
		defer close(done)
		r := bufio.NewReader(client)
		for i := range n {
			_, p, err := readFrame(r)
			if err != nil {
				t.Error(err)
				return
			}
			if want := fmt.Sprintf("event %03d ", i); !strings.HasPrefix(string(p), want) {
				t.Errorf("message %d: %.12q, want %q", i, p, want)
				return
			}
		}
	}()
	var w wsWorker
	q.out.deliver(&w)
	carry, handedOff := q.takeHandoff()
	if handedOff { // the socket was full: the connection's goroutine writes the rest
		if err := q.out.writeOwned(carry, conn.writeFrames); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if !handedOff && conn.tries != 2 {
		t.Fatalf("%d write system calls for %d messages, want 2 (at most %d frames each)", conn.tries, n, wsBatchFrames)
	}
}

// The connection's goroutine, once it owns the queue (a client that fell
// behind), writes what is queued in batches too, not one system call per
// message: the carry first, then every message in order, at most
// wsBatchFrames per write; then the queue is idle again.
func TestWSWriteOwnedBatches(t *testing.T) {
	client, conn, q := loopbackQueue(t)
	q.busy = true // owned: the pushes queue up
	const n = 3*wsBatchFrames + 5
	for i := range n {
		b := []byte(fmt.Sprintf("event %03d", i))
		q.pushFrame("t", b, wsTextFrame(b), coalesceNone, 1<<20, 1<<30)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(client)
		for i := -1; i < n; i++ {
			_, p, err := readFrame(r)
			if err != nil {
				t.Error(err)
				return
			}
			want := fmt.Sprintf("event %03d", i)
			if i < 0 {
				want = "carry"
			}
			if string(p) != want {
				t.Errorf("message %d: %q, want %q", i, p, want)
				return
			}
		}
	}()
	var writes, frames int
	write := func(fs [][]byte) error {
		if len(fs) > wsBatchFrames {
			t.Errorf("a write of %d frames, want at most %d", len(fs), wsBatchFrames)
		}
		writes++
		frames += len(fs)
		return conn.writeFrames(fs)
	}
	if err := q.out.writeOwned(wsTextFrame([]byte("carry")), write); err != nil {
		t.Fatal(err)
	}
	<-done
	if want := 1 + (n+wsBatchFrames-1)/wsBatchFrames; writes != want || frames != n+1 {
		t.Fatalf("%d writes of %d frames, want %d writes of %d", writes, frames, want, n+1)
	}
	if q.busy || len(q.items) != 0 {
		t.Fatalf("after writeOwned: busy %v, %d queued; want idle, empty", q.busy, len(q.items))
	}
}

// loopbackQueue is an out queue whose connection is one end of a loopback
// TCP pair, and the other end to read what it writes; both close with t.
func loopbackQueue(t *testing.T) (net.Conn, *wsConn, *outQueue) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	conn := newWSConn(raw)
	q := newOutQueue()
	q.out = &wsOut{conn: conn, pool: &wsPool{}, q: q}
	return client, conn, q
}
