package pxe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// tftpConn is one transfer's UDP socket: bound to the address the request
// came to (ephemeral port), connected to the client (the kernel drops
// anything from another address or port), blocking, with SO_RCVTIMEO as
// the retransmission timer. A blocking read wakes this thread straight from
// the kernel when the ACK arrives: no netpoller round, no Go timer per block.
type tftpConn struct {
	mu      sync.Mutex
	fd      int
	closed  bool
	timeout time.Duration
}

var errTFTPTimeout = errors.New("timeout")

func dialTFTP(local netip.Addr, peer netip.AddrPort, iface string) (*tftpConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	c := &tftpConn{fd: fd}
	if iface != "" {
		if err := unix.BindToDevice(fd, iface); err != nil {
			c.close()
			return nil, fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
		}
	}
	err = unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()})
	if err == unix.EADDRNOTAVAIL { // e.g. a subnet broadcast address: let the kernel pick
		err = unix.Bind(fd, &unix.SockaddrInet4{})
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("bind %s: %w", local, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: peer.Addr().As4(), Port: int(peer.Port())}); err != nil {
		c.close()
		return nil, fmt.Errorf("connect %s: %w", peer, err)
	}
	return c, nil
}

// setTimeout sets the receive timeout when it changed.
func (c *tftpConn) setTimeout(d time.Duration) error {
	if d == c.timeout {
		return nil
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	c.timeout = d
	return nil
}

func (c *tftpConn) write(b []byte) error {
	for {
		_, err := unix.Write(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	}
}

// read returns the next datagram, errTFTPTimeout when none came within the
// timeout, or 0 bytes once wake was called.
func (c *tftpConn) read(b []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errTFTPTimeout
		case err != nil:
			return 0, fmt.Errorf("receive: %w", err)
		}
		return n, nil
	}
}

// wake makes a blocked read return (shutdown, not close: the fd number
// stays ours until close).
func (c *tftpConn) wake() {
	c.mu.Lock()
	if !c.closed {
		_ = unix.Shutdown(c.fd, unix.SHUT_RD)
	}
	c.mu.Unlock()
}

func (c *tftpConn) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		_ = unix.Close(c.fd)
	}
	c.mu.Unlock()
}

// transfer sends req.file to peer and counts the outcome.
func (t *TFTP) transfer(ctx context.Context, req tftpRequest, peer netip.AddrPort, local netip.Addr, ifindex int) {
	start := time.Now()
	log := t.log.With("file", req.file, "peer", peer.String())
	c, err := dialTFTP(local, peer, t.cfg.Interface)
	if err != nil {
		t.stats.failed.Add(1)
		log.ErrorContext(ctx, "tftp: transfer socket", "err", err)
		return
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.wake)
	defer stop()

	f, err := t.cfg.Files.Open(req.file)
	if err != nil {
		t.stats.refused.Add(1)
		log.ErrorContext(ctx, "tftp: open", "err", err)
		_ = c.write(appendTFTPError(nil, tftpErrNotFound, "file not found"))
		return
	}
	defer f.Close()
	ra, size, err := readerAt(f)
	if err != nil {
		t.stats.failed.Add(1)
		log.ErrorContext(ctx, "tftp: read", "err", err)
		_ = c.write(appendTFTPError(nil, tftpErrUndefined, "read error"))
		return
	}
	s := tftpSender{c: c, ra: ra, size: size, retries: t.cfg.Retries, timeout: t.cfg.Timeout, blksize: 512, window: 1}
	if req.timeout > 0 {
		s.timeout = time.Duration(req.timeout) * time.Second
	}
	if req.blksize > 0 {
		s.blksize = min(req.blksize, t.maxBlksize(ifindex))
	}
	if req.windowsize > 0 {
		s.window = req.windowsize
	}
	if req.blksize > 0 || req.tsize || req.timeout > 0 || req.windowsize > 0 {
		var blk, win int
		if req.blksize > 0 {
			blk = s.blksize
		}
		if req.windowsize > 0 {
			win = s.window
		}
		s.oack = appendTFTPOACK(nil, blk, req.timeout, win, req.tsize, size)
	}
	err = s.run(ctx, start.Add(tftpMaxTransferTime))
	if err != nil {
		t.stats.failed.Add(1)
		if errors.Is(err, errTFTPClient) {
			log.InfoContext(ctx, "tftp: transfer failed", "err", err, "datagrams", s.datagrams)
			return
		}
		msg := "transfer failed"
		if ctx.Err() != nil {
			msg = "server shutting down"
		}
		_ = c.write(appendTFTPError(nil, tftpErrUndefined, msg))
		log.InfoContext(ctx, "tftp: transfer failed", "err", err, "datagrams", s.datagrams)
		return
	}
	t.stats.sent.Add(1)
	log.InfoContext(ctx, "tftp: sent", "duration", time.Since(start).String(), "datagrams", s.datagrams,
		"blksize", s.blksize, "windowsize", s.window)
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

var errTFTPClient = errors.New("client sent an error")

// tftpSender is one read transfer's state. Blocks are numbered from 1 as
// uint64 (the wire carries the low 16 bits, so files past 65535 blocks roll
// over to 0 as most clients expect); block 0 is the OACK.
type tftpSender struct {
	c         *tftpConn
	ra        io.ReaderAt
	size      int64
	retries   int
	timeout   time.Duration
	blksize   int
	window    int
	oack      []byte // nil: no options accepted, data starts at once
	datagrams int
}

func (s *tftpSender) run(ctx context.Context, deadline time.Time) error {
	nblocks := uint64(s.size/int64(s.blksize)) + 1 // the last one is short, maybe empty
	buf := make([]byte, 4+s.blksize)
	var rbuf [516]byte
	var acked, sent uint64
	needOACK := s.oack != nil

	send := func() error {
		if needOACK {
			s.datagrams++
			return s.c.write(s.oack)
		}
		for sent < acked+uint64(s.window) && sent < nblocks {
			sent++
			off := int64(sent-1) * int64(s.blksize)
			n := int(min(int64(s.blksize), s.size-off))
			binary.BigEndian.PutUint16(buf[0:], tftpDATA)
			binary.BigEndian.PutUint16(buf[2:], uint16(sent))
			if got, err := s.ra.ReadAt(buf[4:4+n], off); got != n {
				return fmt.Errorf("read block %d: %d of %d bytes: %w", sent, got, n, err)
			}
			s.datagrams++
			if err := s.c.write(buf[:4+n]); err != nil {
				return err
			}
		}
		return nil
	}

	wait, tries := s.timeout, 0
	if err := s.c.setTimeout(wait); err != nil {
		return err
	}
	if err := send(); err != nil {
		return err
	}
	waitUntil := time.Now().Add(wait)
	for {
		n, err := s.c.read(rbuf[:])
		if err != nil && !errors.Is(err, errTFTPTimeout) {
			return err
		}
		if err == nil && n == 0 && ctx.Err() != nil {
			return fmt.Errorf("stopped: %w", ctx.Err())
		}
		progress := false
		if err == nil && n >= 4 {
			switch binary.BigEndian.Uint16(rbuf[:]) {
			case tftpACK:
				k := binary.BigEndian.Uint16(rbuf[2:])
				if needOACK {
					if k == 0 {
						needOACK, progress = false, true
					}
					break
				}
				// The block k names, counting forward from the last ACK;
				// an ACK of an older block (a duplicate) changes nothing and
				// sends nothing: no sorcerer's apprentice.
				b := acked + uint64(k-uint16(acked))
				if b > acked && b <= sent {
					acked, progress = b, true
					sent = acked // after a window cut short, resend from acked+1
				}
			case tftpERROR:
				msg := rbuf[4:n]
				if i := bytes.IndexByte(msg, 0); i >= 0 {
					msg = msg[:i]
				}
				return fmt.Errorf("%w: code %d: %q", errTFTPClient, binary.BigEndian.Uint16(rbuf[2:]), msg)
			}
		}
		now := time.Now()
		if now.After(deadline) {
			return errors.New("transfer took too long")
		}
		if progress {
			if !needOACK && acked == nblocks {
				return nil
			}
			tries, wait = 0, s.timeout
			if err := s.c.setTimeout(wait); err != nil {
				return err
			}
			if err := send(); err != nil {
				return err
			}
			waitUntil = now.Add(wait)
			continue
		}
		if err == nil && now.Before(waitUntil) {
			continue // stray or duplicate packet: keep waiting
		}
		// Timeout: send the unacknowledged packet(s) again, waiting longer.
		if tries >= s.retries {
			return fmt.Errorf("no ACK for block %d after %d retransmissions", acked+1, tries)
		}
		tries++
		wait = min(2*wait, 4*s.timeout)
		if err := s.c.setTimeout(wait); err != nil {
			return err
		}
		sent = acked
		if err := send(); err != nil {
			return err
		}
		waitUntil = now.Add(wait)
	}
}
