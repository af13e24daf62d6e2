package pxe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lpmos/lpmos/internal/testenv"
)

// requireRing returns a ring, or skips (fails under
// LPMOS_TEST_REQUIRE_ALL=1) where io_uring cannot be set up.
func requireRing(t *testing.T) *tftpRing {
	t.Helper()
	r, err := newTFTPRing()
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("needs io_uring (kernel.io_uring_disabled=0, no seccomp filter): %v", err))
	}
	t.Cleanup(r.close)
	return r
}

// TestTFTPSendPaths: the same downloads (curl, 8 at once, and the Go
// client at blksize 512, 1468 and 8192) through io_uring, through sendto
// when asked (NoIOUring), and through sendto when the ring cannot be set
// up (EPERM, as io_uring_disabled=2 or seccomp).
func TestTFTPSendPaths(t *testing.T) {
	curl := testenv.RequireTool(t, "curl", "curl")
	want, err := fs.ReadFile(IPXEFiles(), FileBIOS)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   TFTPConfig
		setup func() (*tftpRing, error)
		ring  bool
	}{
		{name: "io_uring", ring: true},
		{name: "sendto/NoIOUring", cfg: TFTPConfig{NoIOUring: true}},
		{name: "sendto/setup-EPERM", setup: func() (*tftpRing, error) { return nil, fmt.Errorf("io_uring_setup: %w", unix.EPERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ring {
				requireRing(t)
			}
			tc.cfg.Timeout = time.Second
			tc.cfg.Logger = testLogger(t)
			srv, err := NewTFTP(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			srv.ringSetup = tc.setup
			addr, _, _ := startTFTPServer(t, srv)
			const n = 8
			errs := make(chan error, n)
			for range n {
				out := filepath.Join(t.TempDir(), FileBIOS)
				cmd := exec.Command(curl, "-sS", "--max-time", "20", "-o", out, "tftp://"+addr+"/"+FileBIOS)
				go func() {
					if b, err := cmd.CombinedOutput(); err != nil {
						errs <- fmt.Errorf("curl: %w\n%s", err, b)
						return
					}
					got, err := os.ReadFile(out)
					if err != nil || !bytes.Equal(got, want) {
						errs <- fmt.Errorf("curl: %d bytes (err %v), want %d", len(got), err, len(want))
						return
					}
					errs <- nil
				}()
			}
			for range n {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			for _, blk := range []int{0, 1468, 8192} {
				wt, err := tftpClient(t, addr, blk, true).Receive(FileBIOS, "octet")
				if err != nil {
					t.Fatalf("blksize %d: %v", blk, err)
				}
				var got bytes.Buffer
				if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("blksize %d: %d bytes (err %v), want the %d served", blk, got.Len(), err, len(want))
				}
			}
			if up := srv.ringUp.Load(); up != tc.ring {
				t.Errorf("sending through io_uring: %v, want %v", up, tc.ring)
			}
			deadline := time.Now().Add(5 * time.Second)
			for srv.Stats().Sent != n+3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if s := srv.Stats(); s.Sent != n+3 || s.Failed != 0 {
				t.Fatalf("stats %+v, want %d sent, none failed", s, n+3)
			}
		})
	}
}

// udpPair returns a receiving UDP socket and a transfer socket (as the
// loop dials them) connected to it.
func udpPair(t *testing.T) (*net.UDPConn, int) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fd, err := dialTFTP(tftpSys{}, netip.MustParseAddr("127.0.0.1"), c.LocalAddr().(*net.UDPAddr).AddrPort(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return c, fd
}

// TestTFTPRingBatches: a batch larger than the arena (1000-byte
// datagrams) or than the ring (300 small ones), queued on two sockets,
// arrives whole, in order, each datagram from its own socket; a socket
// queued for closing stays open until its datagrams are sent.
func TestTFTPRingBatches(t *testing.T) {
	ring := requireRing(t)
	a, afd := udpPair(t)
	b, bfd := udpPair(t)
	o := newTFTPOut(tftpSys{}, ring)
	xa, xb := &tftpXfer{fd: afd}, &tftpXfer{fd: bfd}
	for _, tc := range []struct{ count, size int }{{140, 1000}, {300, 8}} {
		for i := range tc.count {
			x, fd := xa, afd
			if i%2 == 1 {
				x, fd = xb, bfd
			}
			p := o.buf(tc.size)
			for j := range p {
				p[j] = byte(i)
			}
			binary.BigEndian.PutUint16(p, uint16(i))
			if err := o.send(x, fd, p); err != nil {
				t.Fatal(err)
			}
		}
		if tc.count*tc.size > tftpArena || tc.count > int(ring.sqEntries) {
			if len(o.q) == tc.count {
				t.Fatalf("%d datagrams of %d bytes queued in one batch", tc.count, tc.size)
			}
		}
		o.flush()
		if o.ringErr != nil || len(o.failed) > 0 {
			t.Fatalf("ring error %v, failed %v", o.ringErr, o.failed)
		}
		buf := make([]byte, 2000)
		for i := range tc.count {
			c, fd := a, afd
			if i%2 == 1 {
				c, fd = b, bfd
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("%d datagrams of %d bytes: datagram %d: %v", tc.count, tc.size, i, err)
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				t.Fatal(err)
			}
			if port := sa.(*unix.SockaddrInet4).Port; int(from.Port()) != port {
				t.Fatalf("datagram %d from port %d, want its socket's %d", i, from.Port(), port)
			}
			if n != tc.size || binary.BigEndian.Uint16(buf) != uint16(i) || buf[n-1] != byte(i) {
				t.Fatalf("datagram %d: %d bytes % x, want %d bytes numbered %d", i, n, buf[:min(n, 8)], tc.size, i)
			}
		}
	}

	// close waits for the queue: the socket is closed after its datagram
	// is sent.
	dup, err := unix.Dup(afd)
	if err != nil {
		t.Fatal(err)
	}
	p := o.buf(4)
	copy(p, "last")
	_ = o.send(xa, dup, p)
	o.close(dup)
	if _, err := unix.FcntlInt(uintptr(dup), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the socket queued for closing was closed before its datagram was sent: %v", err)
	}
	o.flush()
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if n, _, err := a.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "last" {
		t.Fatalf("got %q (%v), want the datagram queued before the close", buf[:n], err)
	}
	if _, err := unix.FcntlInt(uintptr(dup), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("after the flush: %v, want EBADF (flush closes it)", err)
	}
}

// TestTFTPRingRefusedSend: a send the kernel refuses (the client's port
// is closed: ECONNREFUSED from the ICMP error) is listed in failed with
// its transfer, not lost.
func TestTFTPRingRefusedSend(t *testing.T) {
	ring := requireRing(t)
	c, fd := udpPair(t)
	c.Close() // the port is unreachable now
	o := newTFTPOut(tftpSys{}, ring)
	x := &tftpXfer{fd: fd}
	for range 3 { // the first send draws the ICMP error, a later one gets it
		for range 2 { // two a batch: through the ring (one alone goes by sendto)
			p := o.buf(4)
			copy(p, "data")
			_ = o.send(x, fd, p)
		}
		o.flush()
	}
	if len(o.failed) == 0 || o.failed[0].x != x || !errors.Is(o.failed[0].err, unix.ECONNREFUSED) {
		t.Fatalf("failed %+v, want ECONNREFUSED for the transfer", o.failed)
	}
}

// TestTFTPRingFailureFallsBack: a ring whose io_uring_enter fails is given
// up (ringErr), the datagrams queued go out with sendto, and so do later
// ones.
func TestTFTPRingFailureFallsBack(t *testing.T) {
	ring := requireRing(t)
	c, fd := udpPair(t)
	// io_uring_enter on a pipe: EOPNOTSUPP, as a broken ring.
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(pipe[1]) })
	realFd := ring.fd
	t.Cleanup(func() { unix.Close(realFd) })
	ring.fd = pipe[0] // closed by the ring's close
	o := newTFTPOut(tftpSys{}, ring)
	x := &tftpXfer{fd: fd}
	for _, m := range []string{"one", "two"} {
		p := o.buf(len(m))
		copy(p, m)
		_ = o.send(x, fd, p)
	}
	o.flush()
	if o.ring != nil || o.ringErr == nil {
		t.Fatalf("ring %v, err %v: want the ring given up with its error", o.ring, o.ringErr)
	}
	p := o.buf(5)
	copy(p, "three")
	if err := o.send(x, fd, p); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	for _, want := range []string{"one", "two", "three"} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("got %q (%v), want %q", buf[:n], err, want)
		}
	}
}

// TestTFTPRequestRightAfterLastACK: a client that sends its last ACK and
// at once a new request from the same port gets the new transfer (the
// request is not taken for a retransmission of the transfer the ACK
// ends, whichever the loop reads first), ten times in a row.
func TestTFTPRequestRightAfterLastACK(t *testing.T) {
	want, err := fs.ReadFile(IPXEFiles(), FileBIOS)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Timeout: 10 * time.Second})
	c := newRawClient(t, addr)
	c.sendServer(rrq(FileBIOS, "octet", "blksize", "1468"))
	for i := range 10 {
		c.peer = nil
		if p := c.mustRecv(); binary.BigEndian.Uint16(p) != tftpOACK {
			t.Fatalf("file %d: got %q, want an OACK", i, p)
		}
		c.sendPeer(ack(0))
		var got []byte
		for n := uint16(1); ; n++ {
			d := wantData(t, c.mustRecv(), n)
			got = append(got, d...)
			c.sendPeer(ack(n))
			if len(d) < 1468 {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("file %d: %d bytes, differ from the %d served", i, len(got), len(want))
		}
		if i < 9 {
			c.sendServer(rrq(FileBIOS, "octet", "blksize", "1468"))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Sent != 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := srv.Stats(); s.Sent != 10 || s.Failed != 0 {
		t.Fatalf("stats %+v, want 10 sent", s)
	}
}
