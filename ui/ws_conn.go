package ui

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// wsConn is the connection under a /ws WebSocket. The library writes its
// control frames (ping, pong, close) through it; the hub's messages are
// written as prepared frames (header and payload in one buffer, encoded
// once per event for every client) directly: one write system call each,
// or one writev for the frames queued meanwhile (tryWriteFrames).
// Every write holds mu, so frames never interleave; a frame the kernel
// took only in part leaves its rest in pending, which the next writer
// sends first.
type wsConn struct {
	net.Conn
	rc syscall.RawConn // nil: no non-blocking writes (TLS): the connection's goroutine writes everything

	mu        sync.Mutex
	pending   []byte // the unsent rest of a frame
	closeSent bool   // the library sent a close frame: no data frame may follow

	// tryWriteFrame's system call, made once (a closure per call would
	// be an allocation per message per client); its arguments and results
	// are guarded by mu.
	rawWrite  func(fd uintptr) bool
	rawWritev func(fd uintptr) bool
	rawBuf    []byte
	rawIov    []syscall.Iovec
	rawN      int
	rawErr    error
	tries     int      // non-blocking write system calls made (guarded by mu)
	bufs      [][]byte // writeFrames' scratch (guarded by mu)
}

func newWSConn(c net.Conn) *wsConn {
	w := &wsConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc = rc
			w.rawWrite = func(fd uintptr) bool {
				for {
					w.rawN, w.rawErr = syscall.Write(int(fd), w.rawBuf)
					if w.rawErr != syscall.EINTR {
						return true
					}
				}
			}
			w.rawWritev = func(fd uintptr) bool {
				for {
					n, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.rawIov[0])), uintptr(len(w.rawIov)))
					if e == syscall.EINTR {
						continue
					}
					w.rawN, w.rawErr = int(n), nil
					if e != 0 {
						w.rawN, w.rawErr = 0, e
					}
					return true
				}
			}
		}
	}
	return w
}

// Write is the library's path (one call per control frame: the library
// flushes its buffer after each one): it blocks, after any pending rest.
func (w *wsConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.flushLocked(); err != nil {
		return 0, err
	}
	if len(p) > 0 && p[0]&0x0f == 0x8 { // opcode close
		w.closeSent = true
	}
	n, err := w.Conn.Write(p)
	if err != nil {
		return n, fmt.Errorf("websocket write: %w", err)
	}
	return n, nil
}

func (w *wsConn) flushLocked() error {
	if len(w.pending) == 0 {
		return nil
	}
	n, err := w.Conn.Write(w.pending)
	w.pending = w.pending[n:]
	if err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	w.pending = nil
	return nil
}

// writeFrames writes prepared frames (none: only the pending rest), in
// order, blocking until the kernel has them all: one writev system call
// for all of them where the connection allows it (net.Buffers).
func (w *wsConn) writeFrames(frames [][]byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.flushLocked(); err != nil {
		return err
	}
	switch {
	case len(frames) == 0:
		return nil
	case w.closeSent:
		return fmt.Errorf("websocket close frame sent: %w", net.ErrClosed)
	case len(frames) == 1:
		if _, err := w.Conn.Write(frames[0]); err != nil {
			return fmt.Errorf("websocket write: %w", err)
		}
		return nil
	}
	w.bufs = append(w.bufs[:0], frames...)
	bufs := net.Buffers(w.bufs) // WriteTo consumes its copy of the slice header
	_, err := bufs.WriteTo(w.Conn)
	clear(w.bufs)
	if err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	return nil
}

// tryWriteFrame writes frame without blocking: one write system call on
// the non-blocking socket. done: the kernel took it all. Otherwise the
// connection's own goroutine must finish: carry is what it must still
// write (nil when the kernel took part of the frame: the rest is pending,
// sent before anything else).
func (w *wsConn) tryWriteFrame(frame []byte) (done bool, carry []byte) {
	if w.rc == nil || !w.mu.TryLock() {
		return false, frame
	}
	defer w.mu.Unlock()
	if len(w.pending) > 0 || w.closeSent {
		return false, frame
	}
	w.rawBuf = frame
	w.tries++
	err := w.rc.Write(w.rawWrite)
	n, werr := w.rawN, w.rawErr
	w.rawBuf, w.rawErr = nil, nil
	switch {
	case err != nil || (werr != nil && werr != syscall.EAGAIN):
		return false, frame // the blocking write reports the error
	case n == len(frame):
		return true, nil
	case n <= 0:
		return false, frame
	default:
		w.pending = frame[n:]
		return false, nil
	}
}

// tryWriteFrames is tryWriteFrame for several frames (queued for the
// connection meanwhile): one writev system call for all of them. What the
// kernel did not take is carried (or left pending) as one buffer.
func (w *wsConn) tryWriteFrames(frames [][]byte) (done bool, carry []byte) {
	if len(frames) == 1 {
		return w.tryWriteFrame(frames[0])
	}
	if w.rc == nil || !w.mu.TryLock() {
		return false, slices.Concat(frames...)
	}
	defer w.mu.Unlock()
	if len(w.pending) > 0 || w.closeSent {
		return false, slices.Concat(frames...)
	}
	total := 0
	for _, f := range frames {
		iov := syscall.Iovec{Base: unsafe.SliceData(f)}
		iov.SetLen(len(f))
		w.rawIov = append(w.rawIov, iov)
		total += len(f)
	}
	w.tries++
	err := w.rc.Write(w.rawWritev)
	n, werr := w.rawN, w.rawErr
	clear(w.rawIov)
	w.rawIov, w.rawErr = w.rawIov[:0], nil
	switch {
	case err != nil || (werr != nil && werr != syscall.EAGAIN):
		return false, slices.Concat(frames...) // the blocking write reports the error
	case n == total:
		return true, nil
	case n <= 0:
		return false, slices.Concat(frames...)
	default:
		w.pending = slices.Concat(frames...)[n:]
		return false, nil
	}
}

// wsTextFrame is payload as an unmasked final text frame (server to
// client), in one buffer.
func wsTextFrame(payload []byte) []byte {
	n := len(payload)
	f := make([]byte, 0, n+10)
	f = append(f, 0x81) // FIN, text
	switch {
	case n < 126:
		f = append(f, byte(n))
	case n <= 0xffff:
		f = append(f, 126, byte(n>>8), byte(n))
	default:
		f = append(f, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(f, payload...)
}

// wsHijack hands the WebSocket library a wsConn instead of the raw
// connection when it hijacks the request.
type wsHijack struct {
	http.ResponseWriter
	conn *wsConn
}

func (h *wsHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	raw, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	h.conn = newWSConn(raw)
	brw.Writer.Reset(h.conn) // net/http's fresh, empty writer, onto the wrapper
	return h.conn, brw, nil
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (h *wsHijack) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// frameMemo encodes each message's frame once for all the clients it goes
// to (the fan-out hands every client the same payload slice). Guarded by
// Hub.mu.
type frameMemo struct {
	payload, frame []byte
}

func (m *frameMemo) frameOf(payload []byte) []byte {
	if len(payload) == 0 {
		return wsTextFrame(payload)
	}
	if len(m.payload) != len(payload) || &m.payload[0] != &payload[0] {
		m.payload, m.frame = payload, wsTextFrame(payload)
	}
	return m.frame
}

// wsFrameNow is the frame of a queued message: its prepared frame, or
// (a snapshot, whose server_time is set at sending) one encoded now.
func wsFrameNow(payload, frame []byte) []byte {
	if frame != nil {
		return frame
	}
	return wsTextFrame(withFreshServerTime(payload, time.Now()))
}
