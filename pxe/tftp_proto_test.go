package pxe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/testenv"
)

// startTFTPConfig serves cfg on a loopback port; it returns the address and
// a function that stops the server and reports how serve returned.
func startTFTPConfig(t testing.TB, cfg TFTPConfig) (string, *TFTP, func() error) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if os.Getenv("LPMOS_TEST_TFTP_SENDTO") == "1" {
		cfg.NoIOUring = true // the whole suite on the sendto path
	}
	if os.Getenv("LPMOS_TEST_TFTP_NETPOLL") == "1" {
		cfg.NetpollWait = true // the whole suite waiting in the netpoller only
	}
	srv, err := NewTFTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return startTFTPServer(t, srv)
}

// startTFTPServer is startTFTPConfig for a server made by the caller.
func startTFTPServer(t testing.TB, srv *TFTP) (string, *TFTP, func() error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, conn) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("tftp server did not stop")
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return conn.LocalAddr().String(), srv, stop
}

// rawClient is a UDP socket speaking TFTP by hand, to check the server's
// packets one by one.
type rawClient struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr // the listening port
	peer   *net.UDPAddr // the transfer's port, once known
}

func newRawClient(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, conn: conn, server: ua}
}

func rrq(file, mode string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, tftpRRQ)
	for _, s := range append([]string{file, mode}, opts...) {
		b = append(append(b, s...), 0)
	}
	return b
}

func ack(n uint16) []byte { return binary.BigEndian.AppendUint16([]byte{0, tftpACK}, n) }

func (c *rawClient) sendServer(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, c.server); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) sendPeer(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, c.peer); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet within d, or nil.
func (c *rawClient) recv(d time.Duration) []byte {
	c.t.Helper()
	buf := make([]byte, 70000)
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil
		}
		c.t.Fatal(err)
	}
	if c.peer == nil && from.Port != c.server.Port {
		c.peer = from
	}
	return buf[:n]
}

func (c *rawClient) mustRecv() []byte {
	c.t.Helper()
	p := c.recv(5 * time.Second)
	if p == nil {
		c.t.Fatal("no packet from the server within 5 s")
	}
	return p
}

// wantData checks p is DATA block n and returns its payload.
func wantData(t *testing.T, p []byte, n uint16) []byte {
	t.Helper()
	if len(p) < 4 || binary.BigEndian.Uint16(p) != tftpDATA || binary.BigEndian.Uint16(p[2:]) != n {
		t.Fatalf("got % x..., want DATA block %d", p[:min(len(p), 8)], n)
	}
	return p[4:]
}

func wantError(t *testing.T, p []byte, code uint16, msg string) {
	t.Helper()
	if len(p) < 5 || binary.BigEndian.Uint16(p) != tftpERROR || binary.BigEndian.Uint16(p[2:]) != code || !strings.Contains(string(p[4:]), msg) {
		t.Fatalf("got %q, want ERROR %d %q", p, code, msg)
	}
}

// TestTFTPNoResendOnDuplicateACK: a duplicate ACK sends nothing (no
// sorcerer's apprentice); only the timeout retransmits.
func TestTFTPNoResendOnDuplicateACK(t *testing.T) {
	addr, _, _ := startTFTPConfig(t, TFTPConfig{Timeout: 2 * time.Second})
	c := newRawClient(t, addr)
	c.sendServer(rrq(FileBIOS, "octet"))
	wantData(t, c.mustRecv(), 1)
	c.sendPeer(ack(1))
	wantData(t, c.mustRecv(), 2)
	c.sendPeer(ack(1)) // duplicate
	if p := c.recv(time.Second); p != nil {
		t.Fatalf("duplicate ACK 1 answered with %q", p[:4])
	}
	// The timeout (2 s, 1 s of it gone) sends block 2 again.
	wantData(t, c.mustRecv(), 2)
}

func TestTFTPRetransmitsThenGivesUp(t *testing.T) {
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Timeout: 50 * time.Millisecond, Retries: 2})
	c := newRawClient(t, addr)
	c.sendServer(rrq(FileBIOS, "octet"))
	for range 3 { // the first send and 2 retransmissions
		wantData(t, c.mustRecv(), 1)
	}
	wantError(t, c.mustRecv(), tftpErrUndefined, "transfer failed")
	// The error packet leaves before the counter moves.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Failed == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := srv.Stats(); s.Failed != 1 || s.Sent != 0 {
		t.Fatalf("stats %+v, want one failed", s)
	}
}

// TestTFTPOptionsAndWindow negotiates every option and walks a windowed
// transfer, with one window cut short by the client.
func TestTFTPOptionsAndWindow(t *testing.T) {
	want, err := fs.ReadFile(IPXEFiles(), FileBIOS)
	if err != nil {
		t.Fatal(err)
	}
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Timeout: 5 * time.Second})
	c := newRawClient(t, addr)
	c.sendServer(rrq(FileBIOS, "OCTET", "BLKSIZE", "1000", "tsize", "0", "timeout", "3", "windowsize", "4", "x-unknown", "1"))
	oack := c.mustRecv()
	wantOACK := fmt.Sprintf("\x00\x06blksize\x001000\x00tsize\x00%d\x00timeout\x003\x00windowsize\x004\x00", len(want))
	if string(oack) != wantOACK {
		t.Fatalf("OACK %q, want %q", oack, wantOACK)
	}
	c.sendPeer(ack(0))
	for n := uint16(1); n <= 4; n++ {
		wantData(t, c.mustRecv(), n)
	}
	// Block 3 "lost": ACK 2, the server goes on from 3.
	c.sendPeer(ack(2))
	var got []byte
	got = append(got, want[:2000]...)
	n := uint16(3)
	for {
		var last []byte
		for i := 0; i < 4; i++ {
			last = wantData(t, c.mustRecv(), n)
			got = append(got, last...)
			if len(last) < 1000 {
				break
			}
			n++
		}
		if len(last) < 1000 {
			c.sendPeer(ack(n))
			break
		}
		c.sendPeer(ack(n - 1))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, differ from the %d served", len(got), len(want))
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Sent != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := srv.Stats(); s.Sent != 1 {
		t.Fatalf("stats %+v, want one sent", s)
	}
}

// TestTFTPOptionLimits: values outside what the server takes are left out
// of the OACK or lowered.
func TestTFTPOptionLimits(t *testing.T) {
	addr, _, _ := startTFTPConfig(t, TFTPConfig{})
	for _, tc := range []struct {
		opts []string
		oack string // "" = no OACK, DATA 1 at once
	}{
		{[]string{"timeout", "300"}, ""},
		{[]string{"blksize", "4"}, ""},
		{[]string{"blksize", "100000"}, "\x00\x06blksize\x0065464\x00"}, // loopback's MTU allows the most
		{[]string{"windowsize", "1000"}, "\x00\x06windowsize\x0064\x00"},
		{[]string{"windowsize", "0", "blksize", "x"}, ""},
	} {
		c := newRawClient(t, addr)
		c.sendServer(rrq(FileBIOS, "octet", tc.opts...))
		p := c.mustRecv()
		if tc.oack == "" {
			wantData(t, p, 1)
		} else if string(p) != tc.oack {
			t.Errorf("%v: OACK %q, want %q", tc.opts, p, tc.oack)
		}
		c.sendPeer([]byte{0, tftpERROR, 0, 0, 0}) // end it
	}
}

func TestTFTPBadRequests(t *testing.T) {
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{})
	for _, tc := range []struct {
		name string
		pkt  []byte
		code uint16
		msg  string
	}{
		{"unterminated", []byte("\x00\x01undionly.kpxe"), tftpErrIllegalOp, "malformed"},
		{"bad mode", rrq(FileBIOS, "binary"), tftpErrIllegalOp, "malformed"},
		{"netascii", rrq(FileBIOS, "netascii"), tftpErrUndefined, "octet"},
		{"write", append([]byte{0, tftpWRQ}, rrq(FileBIOS, "octet")[2:]...), tftpErrAccess, "read-only"},
		{"traversal", rrq("../../etc/passwd", "octet"), tftpErrNotFound, "not found"},
		{"too long", rrq(strings.Repeat("a", 2000), "octet"), tftpErrIllegalOp, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, addr)
			c.sendServer(tc.pkt)
			wantError(t, c.mustRecv(), tc.code, tc.msg)
		})
	}
	// Packets that are not requests get nothing back.
	c := newRawClient(t, addr)
	for _, p := range [][]byte{ack(1), {0, tftpERROR, 0, 1, 0}, {0, tftpDATA, 0, 1, 'x'}, {0}, {0, 9}} {
		c.sendServer(p)
	}
	if p := c.recv(300 * time.Millisecond); p != nil {
		t.Fatalf("non-request answered: %q", p)
	}
	if s := srv.Stats(); s.Refused != 6 {
		t.Fatalf("stats %+v, want 6 refused", s)
	}
}

// TestTFTPTransferLimit: beyond MaxTransfers a request is refused; a
// retransmitted RRQ does not start a second transfer.
func TestTFTPTransferLimit(t *testing.T) {
	addr, _, _ := startTFTPConfig(t, TFTPConfig{MaxTransfers: 1, Timeout: 5 * time.Second})
	a := newRawClient(t, addr)
	a.sendServer(rrq(FileBIOS, "octet"))
	wantData(t, a.mustRecv(), 1)
	a.sendServer(rrq(FileBIOS, "octet")) // duplicate
	if p := a.recv(300 * time.Millisecond); p != nil {
		t.Fatalf("duplicate RRQ answered: %q", p[:4])
	}
	b := newRawClient(t, addr)
	b.sendServer(rrq(FileBIOS, "octet"))
	wantError(t, b.mustRecv(), tftpErrUndefined, "too many transfers")
	// a finishes; then b gets its file.
	a.sendPeer([]byte{0, tftpERROR, 0, 0, 0})
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.sendServer(rrq(FileBIOS, "octet"))
		p := b.mustRecv()
		if binary.BigEndian.Uint16(p) == tftpDATA {
			wantData(t, p, 1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the first transfer ended: %q", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTFTPShutdownEndsTransfers: stopping the server ends a stalled
// transfer with an error packet instead of waiting for its timeouts.
func TestTFTPShutdownEndsTransfers(t *testing.T) {
	addr, _, stop := startTFTPConfig(t, TFTPConfig{Timeout: 10 * time.Second})
	c := newRawClient(t, addr)
	c.sendServer(rrq(FileBIOS, "octet"))
	wantData(t, c.mustRecv(), 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	wantError(t, c.mustRecv(), tftpErrUndefined, "shutting down")
}

// TestTFTPBusybox fetches with BusyBox's tftp client.
func TestTFTPBusybox(t *testing.T) {
	bb := testenv.RequireTool(t, "busybox", "busybox")
	addr, _, _ := startTFTPConfig(t, TFTPConfig{})
	host, port, _ := net.SplitHostPort(addr)
	for _, name := range IPXEBinaries() {
		want, _ := fs.ReadFile(IPXEFiles(), name)
		for _, blk := range []string{"512", "1468", "8192"} {
			out := filepath.Join(t.TempDir(), name)
			cmd := exec.Command(bb, "tftp", "-g", "-r", name, "-l", out, "-b", blk, host, port)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("busybox tftp %s -b %s: %v\n%s", name, blk, err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("busybox tftp %s -b %s: %d bytes (err %v), want the embedded %d", name, blk, len(got), err, len(want))
			}
		}
	}
	cmd := exec.Command(bb, "tftp", "-g", "-r", "nope.efi", "-l", filepath.Join(t.TempDir(), "x"), host, port)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "not found") {
		t.Fatalf("busybox tftp nope.efi: err %v, output %q; want the server's 'file not found'", err, b)
	}
}

func FuzzParseTFTPRequest(f *testing.F) {
	f.Add(rrq(FileBIOS, "octet"))
	f.Add(rrq(FileBIOS, "octet", "blksize", "1468", "tsize", "0", "timeout", "2", "windowsize", "8"))
	f.Add(append(rrq(FileBIOS, "octet", "tsize", "0"), 0, 0, 0, 0))
	f.Add([]byte("\x00\x02x\x00netascii\x00"))
	f.Add([]byte("\x00\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseTFTPRequest(b)
		if err != nil {
			return
		}
		if r.op != tftpRRQ && r.op != tftpWRQ {
			t.Fatalf("op %d accepted", r.op)
		}
		if len(b) > tftpMaxRequest {
			t.Fatalf("%d-byte request accepted", len(b))
		}
		if r.blksize != 0 && (r.blksize < tftpMinBlksize || r.blksize > tftpMaxBlksize) ||
			r.timeout < 0 || r.timeout > tftpMaxTimeout || r.windowsize < 0 || r.windowsize > tftpMaxWindow {
			t.Fatalf("option out of range: %+v", r)
		}
		if strings.ContainsRune(r.file, 0) || (r.mode != "octet" && r.mode != "netascii" && r.mode != "mail") {
			t.Fatalf("bad fields: %+v", r)
		}
		// What was accepted survives a rebuild.
		var opts []string
		if r.blksize > 0 {
			opts = append(opts, "blksize", fmt.Sprint(r.blksize))
		}
		if r.tsize {
			opts = append(opts, "tsize", "0")
		}
		if r.timeout > 0 {
			opts = append(opts, "timeout", fmt.Sprint(r.timeout))
		}
		if r.windowsize > 0 {
			opts = append(opts, "windowsize", fmt.Sprint(r.windowsize))
		}
		p := rrq(r.file, r.mode, opts...)
		p[1] = byte(r.op)
		r2, err := parseTFTPRequest(p)
		if err != nil && len(p) <= tftpMaxRequest {
			t.Fatalf("rebuilt request %q: %v", p, err)
		}
		if err == nil && r2 != r {
			t.Fatalf("rebuilt %+v, parsed %+v", r2, r)
		}
	})
}

// TestTFTPConcurrentClients: concurrent downloads by two real clients
// (busybox tftp and curl) all complete byte-identical from the one loop,
// and later sequential downloads still do.
func TestTFTPConcurrentClients(t *testing.T) {
	bb := testenv.RequireTool(t, "busybox", "busybox")
	curl := testenv.RequireTool(t, "curl", "curl")
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Timeout: time.Second})
	host, port, _ := net.SplitHostPort(addr)
	want, err := fs.ReadFile(IPXEFiles(), FileBIOS)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	errs := make(chan error, n)
	for i := range n {
		out := filepath.Join(t.TempDir(), FileBIOS)
		var cmd *exec.Cmd
		if i%2 == 0 {
			cmd = exec.Command(bb, "tftp", "-g", "-r", FileBIOS, "-l", out, "-b", "1468", host, port)
		} else {
			cmd = exec.Command(curl, "-sS", "--max-time", "20", "-o", out, "tftp://"+addr+"/"+FileBIOS)
		}
		go func() {
			if b, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: %w\n%s", cmd.Args, err, b)
				return
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, want) {
				errs <- fmt.Errorf("%s: %d bytes (err %v), want %d", cmd.Args, len(got), err, len(want))
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
	for i := range 3 {
		out := filepath.Join(t.TempDir(), FileBIOS)
		if b, err := exec.Command(curl, "-sS", "--max-time", "20", "-o", out, "tftp://"+addr+"/"+FileBIOS).CombinedOutput(); err != nil {
			t.Fatalf("download %d after the concurrent ones: %v\n%s", i, err, b)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Sent != n+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := srv.Stats(); s.Sent != n+3 || s.Failed != 0 {
		t.Fatalf("stats %+v, want %d sent, none failed", s, n+3)
	}
}
