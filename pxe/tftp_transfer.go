package pxe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// tftpLoop is the server's single event loop; only its goroutine touches
// it.
type tftpLoop struct {
	t     *TFTP
	ctx   context.Context
	epfd  int
	efd   int // eventfd: ctx is done
	sys   tftpSys
	out   *tftpOut
	lfd   int // the listening socket (owned by the net.PacketConn)
	xfers map[int]*tftpXfer
	peers map[netip.AddrPort]bool
	rbuf  []byte
	oob   []byte
	abuf  [516]byte // a transfer's incoming packet (ACK or ERROR)
	// ready: the transfers with a datagram waiting, this wake-up; with a
	// ring, read into rbufs (one 516-byte slot each) by one submit.
	ready []*tftpXfer
	rq    []tftpSend
	rres  []int32
	rbufs []byte
}

// serve runs the loop on conn until ctx is done, ends the transfers in
// flight with an error packet, then closes conn.
func (t *TFTP) serve(ctx context.Context, conn net.PacketConn) error {
	defer conn.Close()
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("tftp: %T has no file descriptor", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	l := &tftpLoop{t: t, ctx: ctx, lfd: -1, efd: -1, epfd: -1, xfers: make(map[int]*tftpXfer),
		peers: make(map[netip.AddrPort]bool), rbuf: make([]byte, tftpMaxRequest+1), oob: make([]byte, 128)}
	if err := rc.Control(func(fd uintptr) { l.lfd = int(fd) }); err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	// IP_PKTINFO: the address and interface each request came to.
	if err := unix.SetsockoptInt(l.lfd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fmt.Errorf("tftp: IP_PKTINFO: %w", err)
	}
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("tftp: epoll: %w", err)
	}
	defer func() {
		if l.epfd >= 0 {
			unix.Close(l.epfd)
		}
	}()
	if l.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("tftp: eventfd: %w", err)
	}
	defer unix.Close(l.efd)
	for _, fd := range []int{l.lfd, l.efd} {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fmt.Errorf("tftp: epoll_ctl: %w", err)
		}
	}
	// Sends go through io_uring, batched per wake-up, where it can be set
	// up; otherwise one sendto per datagram.
	var ring *tftpRing
	if !t.cfg.NoIOUring {
		setup := t.ringSetup
		if setup == nil {
			setup = newTFTPRing
		}
		if ring, err = setup(); err != nil {
			t.log.InfoContext(ctx, "tftp: io_uring unavailable, one sendto per datagram", "err", err)
			ring = nil
		}
	}
	l.out = newTFTPOut(l.sys, ring)
	t.ringUp.Store(ring != nil)
	defer func() {
		if l.out.ring != nil {
			l.out.ring.close()
		}
	}()
	// The wake-up writes to efd only while serve still holds it open.
	var mu sync.Mutex
	open := true
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		if open {
			_, _ = unix.Write(l.efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
		mu.Unlock()
	})
	defer func() {
		stop()
		mu.Lock()
		open = false
		mu.Unlock()
	}()
	return l.run()
}

// tftpDirectMax is how many transfers in flight the loop waits for in
// epoll_pwait itself (directWait); with more, it waits in the netpoller.
// tftpDirectSlice bounds one such wait: after that long with nothing to
// do, the loop parks in the netpoller until the next event.
const (
	tftpDirectMax   = 4
	tftpDirectSlice = 10 * time.Millisecond
)

// run waits for events in l's epoll set.
//
// While nothing is in flight, or many transfers are (more than
// tftpDirectMax), it waits in Go's netpoller: a second epoll fd (np)
// holds the set's fd and is itself readable while an event is pending, and
// np waits in the netpoller with the nearest retransmission deadline as
// its read deadline. A wake-up there costs the netpoller's epoll_pwait, a
// goroutine switch, and an epoll_pwait on the set before parking again
// (5.3 system calls per block sequentially, dnsmasq 5.2, and ~12% more
// CPU per block than dnsmasq).
//
// While 1..tftpDirectMax transfers are in flight (a sequential download:
// one ACK per wake-up, nothing to batch), the loop instead blocks in
// epoll_pwait on the set itself, raw (tftpSys.epollBlockRaw): 3 system
// calls per block (epoll_pwait, read, sendto) and no scheduler work
// between them. The set is then taken out of np, so a thread parked in the
// netpoller is not woken by the same ACK. A raw call keeps the goroutine's
// P while it waits: to the scheduler the loop is a running goroutine. So
// the loop yields (runtime.Gosched) after every 10 ms of direct waiting
// (tftpDirectSlice), and the P's other goroutines wait at most that long,
// as behind a CPU-bound goroutine (an idle P steals them and runs the
// held P's timers sooner; sysmon, when awake, preempts the loop after
// 10 ms too: its SIGURG ends the wait with EINTR, as a stop-the-world's
// does). Bounds: only with GOMAXPROCS >= 2 (the other goroutines keep a
// P), each wait at most tftpDirectSlice, and after a slice with nothing
// to do the loop parks in the netpoller until the next event (a stalled
// client holds no P). Through Syscall instead of raw, each transfer woke
// sysmon from its deep sleep into 20 µs polling (57 nanosleeps per
// 145-block file) and cost 1.4x the CPU per block of the netpoller path.
func (l *tftpLoop) run() error {
	npfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("tftp: epoll: %w", err)
	}
	if err := unix.SetNonblock(npfd, true); err != nil {
		unix.Close(npfd)
		return fmt.Errorf("tftp: epoll: %w", err)
	}
	np := os.NewFile(uintptr(npfd), "tftp-epoll")
	defer np.Close()
	rc, err := np.SyscallConn()
	if err != nil {
		return fmt.Errorf("tftp: epoll: %w", err)
	}
	// inNP: the set is in np (the netpoller sees its events).
	inNP := false
	watch := func(on bool) error {
		if on == inNP {
			return nil
		}
		var err error
		if on {
			err = l.sys.epollCtl(npfd, unix.EPOLL_CTL_ADD, l.epfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.epfd)})
		} else {
			err = l.sys.epollCtl(npfd, unix.EPOLL_CTL_DEL, l.epfd, nil)
		}
		if err != nil {
			return fmt.Errorf("tftp: epoll_ctl: %w", err)
		}
		inNP = on
		return nil
	}
	events := make([]unix.EpollEvent, 64)
	l.ready = make([]*tftpXfer, 0, len(events))
	if l.out.ring != nil {
		l.rq = make([]tftpSend, 0, len(events))
		l.rres = make([]int32, len(events))
		l.rbufs = make([]byte, len(events)*len(l.abuf))
	}
	var (
		n     int
		werr  error
		armed time.Time // the read deadline set on np, zero: none
		// quiet: the last direct wait ran its whole slice without an
		// event; wait in the netpoller until one comes.
		quiet bool
		// yielded: when the loop, waiting directly, last let the P's
		// other goroutines run (zero: it was in the netpoller since).
		yielded time.Time
	)
	wait := func(fd uintptr) bool {
		n, werr = l.sys.epollWait(l.epfd, events)
		if werr == unix.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	}
	// multiP: GOMAXPROCS >= 2, looked up when the loop leaves the
	// netpoller (the runtime may change it while running).
	multiP := false
	for {
		var next time.Time
		for _, x := range l.xfers {
			if next.IsZero() || x.waitUntil.Before(next) {
				next = x.waitUntil
			}
		}
		n, werr = 0, nil
		direct := !l.t.cfg.NetpollWait && !quiet && !next.IsZero() && len(l.xfers) <= tftpDirectMax
		if direct && inNP {
			multiP = runtime.GOMAXPROCS(0) >= 2
		}
		if direct && multiP {
			if err := watch(false); err != nil {
				l.endAll("server error")
				return err
			}
			now := time.Now()
			if now.Sub(yielded) >= tftpDirectSlice {
				// The P's other goroutines run at least this often,
				// whether or not sysmon is awake to preempt the loop.
				if !yielded.IsZero() {
					runtime.Gosched()
				}
				yielded = now
			}
			until := min(next.Sub(now), tftpDirectSlice)
			l.t.waits.direct.Add(1)
			n, werr = l.sys.epollBlockRaw(l.epfd, events, until)
			switch {
			case werr == unix.EINTR: // a signal (the runtime's preemption): wait again
				n, werr = 0, nil
			case n == 0 && werr == nil && until == tftpDirectSlice:
				quiet = true // a whole slice without an event: park
			}
		} else {
			if err := watch(true); err != nil {
				l.endAll("server error")
				return err
			}
			switch {
			case next.IsZero():
				if !armed.IsZero() {
					_ = np.SetReadDeadline(time.Time{})
					armed = time.Time{}
				}
			case armed.IsZero() || next.Before(armed) || !time.Now().Before(armed):
				_ = np.SetReadDeadline(next)
				armed = next
			}
			l.t.waits.netpoll.Add(1)
			yielded = time.Time{}
			if err := rc.Read(wait); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				l.endAll("server error")
				return fmt.Errorf("tftp: epoll: %w", err)
			}
			quiet = false
		}
		if werr != nil {
			l.endAll("server error")
			return fmt.Errorf("tftp: epoll_wait: %w", werr)
		}
		// Everything this wake-up reads is answered first, then sent at
		// once (flush).
		now := time.Now()
		reqs := false
		for _, ev := range events[:n] {
			switch fd := int(ev.Fd); fd {
			case l.efd:
				l.endAll("server shutting down")
				return nil
			case l.lfd:
				reqs = true
			default:
				if x := l.xfers[fd]; x != nil {
					l.ready = append(l.ready, x)
				}
			}
		}
		// The transfers' datagrams first: a client that sends its last
		// ACK and at once a new request from the same port (as iPXE may)
		// has its old transfer ended before the request is looked at, or
		// the request would be taken for a retransmission of the old one.
		l.receive(now)
		if reqs {
			if err := l.requests(now); err != nil {
				l.endAll("server error")
				return err
			}
		}
		for _, x := range l.xfers {
			if !now.Before(x.waitUntil) {
				l.step(x, x.timedOut(now))
			}
		}
		l.flush()
	}
}

// flush sends what the wake-up queued and ends the transfers whose sends
// the kernel refused (e.g. ECONNREFUSED: the client is gone).
func (l *tftpLoop) flush() {
	for {
		l.out.flush()
		if err := l.out.ringErr; err != nil {
			l.out.ringErr = nil
			l.t.ringUp.Store(false)
			l.t.log.ErrorContext(l.ctx, "tftp: io_uring failed, one sendto per datagram from now on", "err", err)
		}
		if len(l.out.failed) == 0 {
			return
		}
		failed := l.out.failed
		l.out.failed = nil
		for _, f := range failed {
			if l.xfers[f.x.fd] == f.x {
				l.step(f.x, f.err)
			}
		}
	}
}

// requests reads every request waiting on the listening socket.
func (l *tftpLoop) requests(now time.Time) error {
	for {
		n, oobn, peer, err := l.sys.recvmsg4(l.lfd, l.rbuf, l.oob)
		switch err {
		case nil:
		case unix.EBADF, unix.ENOTSOCK, unix.EINVAL, unix.EFAULT:
			return fmt.Errorf("tftp: read: %w", err)
		default: // EAGAIN: drained; a transient error (ICMP report, ENOBUFS): next time
			return nil
		}
		if !peer.IsValid() {
			continue
		}
		local, ifindex := netip.IPv4Unspecified(), 0
		if cms, err := unix.ParseSocketControlMessage(l.oob[:oobn]); err == nil {
			for _, m := range cms {
				if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo {
					ifindex = int(binary.NativeEndian.Uint32(m.Data[0:4]))
					local = netip.AddrFrom4([4]byte(m.Data[8:12])) // ipi_addr: the header's destination
				}
			}
		}
		if local == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			local = netip.IPv4Unspecified() // the kernel picks the source
		}
		l.request(l.rbuf[:n], peer, local, ifindex, now)
	}
}

// request answers one packet read on the listening port: an RRQ for a
// served file starts a transfer, any other request is refused from this
// port, and what is not a request is dropped (never an error to an error,
// nothing to amplify).
func (l *tftpLoop) request(b []byte, peer netip.AddrPort, local netip.Addr, ifindex int, now time.Time) {
	t := l.t
	req, err := parseTFTPRequest(b)
	if errors.Is(err, errNotRequest) {
		return
	}
	refuse := func(code uint16, msg, reason string) {
		t.stats.refused.Add(1)
		t.log.InfoContext(l.ctx, "tftp: refused", "file", req.file, "peer", peer.String(), "reason", reason)
		var oob []byte
		if !local.IsUnspecified() {
			oob = (&ipv4.ControlMessage{Src: local.AsSlice()}).Marshal()
		}
		sa := &unix.SockaddrInet4{Addr: peer.Addr().As4(), Port: int(peer.Port())}
		_, _ = unix.SendmsgN(l.lfd, appendTFTPError(nil, code, msg), oob, sa, 0)
	}
	switch {
	case err != nil:
		refuse(tftpErrIllegalOp, "malformed request", err.Error())
	case req.op == tftpWRQ:
		t.log.WarnContext(l.ctx, "tftp: write request refused", "file", req.file, "peer", peer.String())
		refuse(tftpErrAccess, "access violation: this server is read-only", "write request")
	case !t.files[req.file]:
		refuse(tftpErrNotFound, "file not found", "not an iPXE binary served here")
	case req.mode != "octet":
		refuse(tftpErrUndefined, "only octet mode is served", "mode "+req.mode)
	case l.peers[peer]:
		// A retransmitted RRQ: the transfer already running answers it.
	case len(l.peers) >= t.cfg.MaxTransfers:
		refuse(tftpErrUndefined, "too many transfers, try again later", "too many transfers")
	default:
		l.start(req, peer, local, ifindex, now)
	}
}

// start opens the transfer's socket and file and sends the first packet.
func (l *tftpLoop) start(req tftpRequest, peer netip.AddrPort, local netip.Addr, ifindex int, now time.Time) {
	t := l.t
	fd, err := dialTFTP(l.sys, local, peer, t.cfg.Interface)
	if err != nil {
		t.stats.failed.Add(1)
		t.log.ErrorContext(l.ctx, "tftp: transfer socket", "file", req.file, "peer", peer.String(), "err", err)
		return
	}
	x := &tftpXfer{out: l.out, fd: fd, peer: peer, file: req.file, start: now, retries: t.cfg.Retries, timeout: t.cfg.Timeout, blksize: 512, window: 1}
	l.xfers[fd] = x
	l.peers[peer] = true
	if err := l.sys.epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		l.end(x, fmt.Errorf("epoll_ctl: %w", err), "server error")
		return
	}
	f, err := t.cfg.Files.Open(req.file)
	if err != nil {
		t.stats.refused.Add(1)
		t.log.ErrorContext(l.ctx, "tftp: open", "file", req.file, "err", err)
		_ = x.write(appendTFTPError(nil, tftpErrNotFound, "file not found"))
		x.counted = true
		l.end(x, nil, "")
		return
	}
	x.f = f
	if x.ra, x.size, err = readerAt(f); err != nil {
		l.end(x, err, "read error")
		return
	}
	if req.timeout > 0 {
		x.timeout = time.Duration(req.timeout) * time.Second
	}
	if req.blksize > 0 {
		x.blksize = min(req.blksize, t.maxBlksize(ifindex))
	}
	if req.windowsize > 0 {
		// At most ~256 KiB in flight per ACK, whatever was asked.
		x.window = max(1, min(req.windowsize, (256<<10)/(x.blksize+4)))
	}
	if req.blksize > 0 || req.tsize || req.timeout > 0 || req.windowsize > 0 {
		var blk, win int
		if req.blksize > 0 {
			blk = x.blksize
		}
		if req.windowsize > 0 {
			win = x.window
		}
		x.oack = appendTFTPOACK(nil, blk, req.timeout, win, req.tsize, x.size)
		x.needOACK = true
	}
	x.nblocks = uint64(x.size/int64(x.blksize)) + 1 // the last one is short, maybe empty
	x.wait = x.timeout
	x.waitUntil = now.Add(x.wait)
	l.step(x, x.send())
}

// receive reads one datagram from each ready transfer and handles it:
// with a ring, all in one submit when there are several. A transfer with
// more waiting is ready again at the next epoll_wait (level-triggered), so
// no read is spent on the EAGAIN that ends a drain.
func (l *tftpLoop) receive(now time.Time) {
	defer func() {
		clear(l.ready)
		l.ready = l.ready[:0]
	}()
	if len(l.ready) == 0 {
		return
	}
	// One alone is read with read(2): cheaper than io_uring_enter.
	if ring := l.out.ring; ring != nil && len(l.ready) > 1 {
		q := l.rq[:0]
		slot := len(l.abuf)
		for i, x := range l.ready {
			q = append(q, tftpSend{fd: x.fd, b: l.rbufs[i*slot : (i+1)*slot : (i+1)*slot], x: x})
		}
		res := l.rres[:len(q)]
		err := ring.submit(ioringOpRecv, q, res)
		if err == nil {
			for i, s := range q {
				n, rerr := int(res[i]), error(nil)
				if n < 0 {
					n, rerr = 0, unix.Errno(-res[i])
				}
				l.packet(s.x, s.b[:n], rerr, now)
			}
			clear(q)
			return
		}
		clear(q)
		l.out.dropRing(err) // read them one by one below
	}
	for _, x := range l.ready {
		n, err := l.sys.read(x.fd, l.abuf[:])
		l.packet(x, l.abuf[:max(n, 0)], err, now)
	}
}

// packet hands x the datagram p its socket gave, or the socket's error.
func (l *tftpLoop) packet(x *tftpXfer, p []byte, err error, now time.Time) {
	switch err {
	case nil:
	case unix.EAGAIN, unix.EINTR: // nothing after all; epoll says so again if wrong
		return
	default:
		l.step(x, fmt.Errorf("receive: %w", err)) // e.g. ECONNREFUSED: the client is gone
		return
	}
	done, err := x.packet(p, now)
	if done || err != nil {
		if err == nil {
			err = errTFTPDone
		}
		l.step(x, err)
	}
}

var errTFTPDone = errors.New("done")

// step ends x if err says so.
func (l *tftpLoop) step(x *tftpXfer, err error) {
	switch {
	case err == nil:
	case errors.Is(err, errTFTPDone):
		l.end(x, nil, "")
	case errors.Is(err, errTFTPProbe):
		x.counted = true
		l.t.log.DebugContext(l.ctx, "tftp: size probe", "file", x.file, "peer", x.peer.String())
		l.end(x, nil, "")
	case errors.Is(err, errTFTPClient):
		l.end(x, err, "")
	default:
		l.end(x, err, "transfer failed")
	}
}

// end removes x, counts and logs its outcome; a non-empty msg is sent to
// the client in an ERROR packet.
func (l *tftpLoop) end(x *tftpXfer, err error, msg string) {
	t := l.t
	if msg != "" {
		_ = x.write(appendTFTPError(nil, tftpErrUndefined, msg))
	}
	_ = l.sys.epollCtl(l.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
	l.out.close(x.fd)
	if x.f != nil {
		_ = x.f.Close()
	}
	delete(l.xfers, x.fd)
	delete(l.peers, x.peer)
	if x.counted {
		return
	}
	x.counted = true
	if err != nil {
		t.stats.failed.Add(1)
		t.log.InfoContext(l.ctx, "tftp: transfer failed", "file", x.file, "peer", x.peer.String(), "err", err, "datagrams", x.datagrams)
		return
	}
	t.stats.sent.Add(1)
	t.log.InfoContext(l.ctx, "tftp: sent", "file", x.file, "peer", x.peer.String(), "duration", time.Since(x.start).String(),
		"datagrams", x.datagrams, "blksize", x.blksize, "windowsize", x.window)
}

// endAll ends every transfer with msg and sends what is queued.
func (l *tftpLoop) endAll(msg string) {
	for _, x := range l.xfers {
		l.end(x, errors.New(msg), msg)
	}
	l.flush()
}

// dialTFTP returns a transfer's UDP socket: non-blocking, bound to the
// address the request came to (ephemeral port), connected to the client
// (the kernel drops anything from another address or port).
func dialTFTP(sys tftpSys, local netip.Addr, peer netip.AddrPort, iface string) (int, error) {
	fd, err := sys.socketUDP4()
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if iface != "" {
		if err := unix.BindToDevice(fd, iface); err != nil {
			_ = sys.close(fd)
			return -1, fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
		}
	}
	err = sys.bind(fd, netip.AddrPortFrom(local, 0))
	if err == unix.EADDRNOTAVAIL { // e.g. a subnet broadcast address: let the kernel pick
		err = sys.bind(fd, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	}
	if err != nil {
		_ = sys.close(fd)
		return -1, fmt.Errorf("bind %s: %w", local, err)
	}
	if err := sys.connect(fd, peer); err != nil {
		_ = sys.close(fd)
		return -1, fmt.Errorf("connect %s: %w", peer, err)
	}
	return fd, nil
}

// readerAt gives random access to f (embed and os files have it; anything
// else is read into memory, up to 64 MiB).
func readerAt(f fs.File) (io.ReaderAt, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("stat: %w", err)
	}
	if ra, ok := f.(io.ReaderAt); ok {
		return ra, st.Size(), nil
	}
	const limit = 64 << 20
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	if len(b) > limit {
		return nil, 0, errors.New("file larger than 64 MiB")
	}
	return bytes.NewReader(b), int64(len(b)), nil
}

var (
	errTFTPClient = errors.New("client sent an error")
	errTFTPProbe  = errors.New("option probe ended by the client")
)

// tftpXfer is one read transfer's state. Blocks are numbered from 1 as
// uint64 (the wire carries the low 16 bits, so files past 65535 blocks roll
// over to 0 as most clients expect); the OACK is acknowledged as block 0.
type tftpXfer struct {
	out       *tftpOut
	fd        int
	peer      netip.AddrPort
	file      string
	start     time.Time
	f         fs.File
	ra        io.ReaderAt
	size      int64
	retries   int
	timeout   time.Duration
	blksize   int
	window    int
	oack      []byte // nil: no options accepted, data starts at once
	needOACK  bool
	nblocks   uint64
	acked     uint64
	sent      uint64
	tries     int
	wait      time.Duration
	waitUntil time.Time
	datagrams int
	counted   bool
}

// write sends a copy of p.
func (x *tftpXfer) write(p []byte) error {
	x.datagrams++
	b := x.out.buf(len(p))
	copy(b, p)
	return x.out.send(x, x.fd, b)
}

// send sends the OACK, or the blocks of the window not sent yet.
func (x *tftpXfer) send() error {
	if x.needOACK {
		return x.write(x.oack)
	}
	for x.sent < x.acked+uint64(x.window) && x.sent < x.nblocks {
		x.sent++
		off := int64(x.sent-1) * int64(x.blksize)
		n := int(min(int64(x.blksize), x.size-off))
		b := x.out.buf(4 + n)
		binary.BigEndian.PutUint16(b[0:], tftpDATA)
		binary.BigEndian.PutUint16(b[2:], uint16(x.sent))
		if got, err := x.ra.ReadAt(b[4:], off); got != n {
			return fmt.Errorf("read block %d: %d of %d bytes: %w", x.sent, got, n, err)
		}
		x.datagrams++
		if err := x.out.send(x, x.fd, b); err != nil {
			return err
		}
	}
	return nil
}

// packet handles one datagram from the client; done is true once the last
// block is acknowledged.
func (x *tftpXfer) packet(p []byte, now time.Time) (done bool, err error) {
	if len(p) < 4 {
		return false, nil
	}
	switch binary.BigEndian.Uint16(p) {
	case tftpACK:
		k := binary.BigEndian.Uint16(p[2:])
		if x.needOACK {
			if k != 0 {
				return false, nil
			}
			x.needOACK = false
		} else {
			// The block k names, counting forward from the last ACK; an
			// ACK of an older block (a duplicate) changes nothing and sends
			// nothing: no sorcerer's apprentice.
			b := x.acked + uint64(k-uint16(x.acked))
			if b <= x.acked || b > x.sent {
				return false, nil
			}
			x.acked = b
			x.sent = b // after a window cut short, go on from acked+1
			if x.acked == x.nblocks {
				return true, nil
			}
		}
		x.tries, x.wait = 0, x.timeout
		x.waitUntil = now.Add(x.wait)
		if now.Sub(x.start) > tftpMaxTransferTime {
			return false, errors.New("transfer took too long")
		}
		return false, x.send()
	case tftpERROR:
		if x.needOACK && binary.BigEndian.Uint16(p[2:]) == tftpErrOptionRefuse {
			// UEFI firmware asks for tsize, then ends the transfer after the
			// OACK: a size probe, not a failure.
			return false, errTFTPProbe
		}
		msg := p[4:]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i]
		}
		return false, fmt.Errorf("%w: code %d: %q", errTFTPClient, binary.BigEndian.Uint16(p[2:]), msg)
	}
	return false, nil
}

// timedOut sends the unacknowledged packet(s) again, waiting longer each
// time, or gives up.
func (x *tftpXfer) timedOut(now time.Time) error {
	if x.tries >= x.retries {
		return fmt.Errorf("no ACK for block %d after %d retransmissions", x.acked+1, x.tries)
	}
	x.tries++
	x.wait = min(2*x.wait, 4*x.timeout)
	x.waitUntil = now.Add(x.wait)
	x.sent = x.acked
	return x.send()
}
