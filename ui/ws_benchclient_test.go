package ui_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The benchmark's lean clients (the default; LPMOS_WSBENCH_CLIENT=lib
// runs coder/websocket clients instead). The clients share the 2 cores
// with lpmos, so what they spend per message is taken from the server's
// latency: a library client costs two read system calls per message (the
// data, then EAGAIN before it parks) plus a goroutine wake-up through the
// runtime's poller. These clients are raw non-blocking sockets served by
// a few epoll loops (one OS thread each, level-triggered): one epoll_wait
// serves every socket that became readable meanwhile, one read per
// socket takes its frames. They still do what a client must: the opening
// handshake (HTTP upgrade, checked 101 and Sec-WebSocket-Accept), the
// parse of every frame (FIN, opcode, 7/16/64-bit length, no mask from the
// server, partial frames kept for the next read), pong for every ping
// (masked, as the protocol wants of a client), close; and, of each text
// message, the type, the JSON timestamp and seq the benchmark needs. No
// allocation per message (one read buffer per loop; a partial frame is
// copied aside).

// rawWSClient is one connection of the lean clients.
type rawWSClient struct {
	fd   int
	i    int
	rest []byte // the start of a frame the last read did not complete
	lats []int64
}

// rawWSClients serves n connections with loops epoll loops.
type rawWSClients struct {
	clients []*rawWSClient
	eps     []int
	stop    [2]int // pipe: written to end the loops
	wg      sync.WaitGroup
	onText  func(c *rawWSClient, payload []byte, now int64)
	errc    chan error
	// nap: after handling what one epoll_wait returned, the loop sleeps
	// this long before it waits again (0: not at all), so that the
	// messages arriving meanwhile are taken by one wait and the server's
	// writes find no waiter to wake (interrupt moderation, as a NIC's).
	nap   time.Duration
	waits atomic.Int64 // epoll_wait calls that returned events
}

func newRawWSClients(loops int, onText func(c *rawWSClient, payload []byte, now int64)) (*rawWSClients, error) {
	r := &rawWSClients{onText: onText, errc: make(chan error, loops)}
	if err := syscall.Pipe2(r.stop[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	for range loops {
		ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("epoll_create: %w", err)
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(r.stop[0]), Pad: -1}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, r.stop[0], &ev); err != nil {
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
		r.eps = append(r.eps, ep)
	}
	for _, ep := range r.eps {
		r.wg.Add(1)
		go r.loop(ep)
	}
	return r, nil
}

// dial opens client i: handshake, then the first message (the snapshot)
// read blocking; then the socket joins a loop, non-blocking.
func (r *rawWSClients) dial(i int, addr netip.AddrPort, path, token string, c *rawWSClient) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	c.fd, c.i = fd, i
	sa := &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	if err := syscall.Connect(fd, sa); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("connect: %w", err)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr.String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + token + "\r\n\r\n"
	if err := writeAll(fd, []byte(req)); err != nil {
		syscall.Close(fd)
		return err
	}
	buf := make([]byte, 0, 4096)
	var hdr []byte
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			syscall.Close(fd)
			return fmt.Errorf("read: %d bytes, %w", n, errors.Join(err, net.ErrClosed))
		}
		buf = buf[:len(buf)+n]
		if hdr == nil {
			end := bytes.Index(buf, []byte("\r\n\r\n"))
			if end < 0 {
				continue
			}
			hdr = buf[: end+2 : end+2]
			if !bytes.HasPrefix(hdr, []byte("HTTP/1.1 101 ")) || !bytes.Contains(bytes.ToLower(hdr), []byte("\r\nsec-websocket-accept: "+strings.ToLower(wsAccept(k))+"\r\n")) {
				syscall.Close(fd)
				return fmt.Errorf("handshake refused: %q", hdr)
			}
			buf = append([]byte(nil), buf[end+4:]...)
		}
		payload, _, size, ok := parseWSFrame(buf)
		if !ok {
			continue
		}
		if !bytes.HasPrefix(payload, []byte(`{"type":"snapshot"`)) {
			syscall.Close(fd)
			return fmt.Errorf("first message is not a snapshot: %.60q", payload)
		}
		c.rest = append([]byte(nil), buf[size:]...)
		break
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("nonblock: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd), Pad: int32(i)}
	if err := syscall.EpollCtl(r.eps[i%len(r.eps)], syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// wsAccept is the Sec-WebSocket-Accept answer to key (RFC 6455 4.2.2),
// base64(SHA-1(key + the protocol's GUID)).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// parseWSFrame parses the server frame at the start of d: its payload and
// opcode, and the frame's size; ok false: d holds only part of it.
// Fragmented and masked frames are refused (op 0xff): the server sends
// neither.
func parseWSFrame(d []byte) (payload []byte, op byte, size int, ok bool) {
	if len(d) < 2 {
		return nil, 0, 0, false
	}
	l, h := uint64(d[1]&0x7f), 2
	switch l {
	case 126:
		if len(d) < 4 {
			return nil, 0, 0, false
		}
		l, h = uint64(binary.BigEndian.Uint16(d[2:])), 4
	case 127:
		if len(d) < 10 {
			return nil, 0, 0, false
		}
		l, h = binary.BigEndian.Uint64(d[2:]), 10
	}
	if l > 1<<30 {
		return nil, 0xff, 0, true
	}
	if uint64(len(d)-h) < l {
		return nil, 0, 0, false
	}
	op = d[0] & 0x0f
	if d[0]&0x80 == 0 || d[1]&0x80 != 0 || d[0]&0x70 != 0 {
		op = 0xff
	}
	return d[h : h+int(l)], op, h + int(l), true
}

func (r *rawWSClients) loop(ep int) {
	defer r.wg.Done()
	runtime.LockOSThread()
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.EpollWait(ep, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			r.errc <- fmt.Errorf("epoll_wait: %w", err)
			return
		}
		r.waits.Add(1)
		for _, ev := range events[:n] {
			if ev.Pad < 0 {
				return // stop
			}
			c := r.clients[ev.Pad]
			if err := r.readFrames(c, &buf); err != nil {
				syscall.Close(c.fd) // leaves the epoll set too
				c.fd = -1
			}
		}
		if r.nap > 0 {
			time.Sleep(r.nap)
		}
	}
}

// readFrames reads what c's socket has (one read) after any partial frame
// kept from the last read, and handles every whole frame.
func (r *rawWSClients) readFrames(c *rawWSClient, bufp *[]byte) error {
	buf := *bufp
	if len(c.rest)+4096 > len(buf) {
		buf = make([]byte, 2*(len(c.rest)+4096))
		*bufp = buf
	}
	k := copy(buf, c.rest)
	n, err := syscall.Read(c.fd, buf[k:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return nil
	}
	if err != nil || n == 0 {
		return errors.Join(err, net.ErrClosed)
	}
	now := time.Now().UnixNano()
	d := buf[:k+n]
	for {
		payload, op, size, ok := parseWSFrame(d)
		if !ok {
			break
		}
		switch op {
		case 0x1:
			r.onText(c, payload, now)
		case 0x9: // ping: pong with the same payload, masked (zero key)
			if len(payload) > 125 {
				return errors.New("ping payload over 125 bytes")
			}
			var pong [6 + 125]byte
			pong[0], pong[1] = 0x8a, 0x80|byte(len(payload))
			m := 6 + copy(pong[6:], payload)
			if err := writeAll(c.fd, pong[:m]); err != nil {
				return err
			}
		case 0xa:
		default: // close, binary, fragmented or masked: not what /ws sends
			return fmt.Errorf("frame opcode %#x", op)
		}
		d = d[size:]
	}
	c.rest = append(c.rest[:0], d...)
	return nil
}

// close ends the loops and closes every connection.
func (r *rawWSClients) close() {
	_, _ = syscall.Write(r.stop[1], []byte{1})
	r.wg.Wait()
	for _, c := range r.clients {
		if c != nil && c.fd >= 0 {
			syscall.Close(c.fd)
		}
	}
	for _, ep := range r.eps {
		syscall.Close(ep)
	}
	syscall.Close(r.stop[0])
	syscall.Close(r.stop[1])
}
