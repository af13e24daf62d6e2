package pxe

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/testenv"
)

// TestTFTPWaitPaths: sequential downloads by curl (blksize 512 and 1468)
// and the Go client (with tsize, blksize 512 and 8192) arrive whole
// whether the loop waits in epoll_pwait itself (the default while a few
// transfers are in flight), in the netpoller only (NetpollWait), or in the
// netpoller because GOMAXPROCS is 1; and each path is the one taken.
func TestTFTPWaitPaths(t *testing.T) {
	curl := testenv.RequireTool(t, "curl", "curl")
	want, err := fs.ReadFile(IPXEFiles(), FileBIOS)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     TFTPConfig
		procs   int
		direct  bool
		sendto  bool
		netpoll bool
	}{
		{name: "direct", direct: true},
		{name: "direct/sendto", cfg: TFTPConfig{NoIOUring: true}, direct: true},
		{name: "netpoll", cfg: TFTPConfig{NetpollWait: true}},
		{name: "GOMAXPROCS=1", procs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.procs > 0 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.procs))
			} else if runtime.GOMAXPROCS(0) < 2 {
				t.Skip("the direct wait needs GOMAXPROCS >= 2")
			}
			tc.cfg.Timeout = time.Second
			tc.cfg.Logger = testLogger(t)
			srv, err := NewTFTP(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			addr, _, _ := startTFTPServer(t, srv)
			for _, args := range [][]string{nil, {"--tftp-blksize", "1468"}} {
				out := filepath.Join(t.TempDir(), FileBIOS)
				cmd := exec.Command(curl, append(args, "-sS", "--max-time", "20", "-o", out, "tftp://"+addr+"/"+FileBIOS)...)
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("curl %v: %v\n%s", args, err, b)
				}
				if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("curl %v: %d bytes (err %v), want %d", args, len(got), err, len(want))
				}
			}
			for _, blk := range []int{0, 8192} {
				wt, err := tftpClient(t, addr, blk, true).Receive(FileBIOS, "octet")
				if err != nil {
					t.Fatalf("blksize %d: %v", blk, err)
				}
				var got bytes.Buffer
				if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("blksize %d: %d bytes (err %v), want the %d served", blk, got.Len(), err, len(want))
				}
			}
			// The last ACK is handled after the client is done.
			deadline := time.Now().Add(5 * time.Second)
			for srv.Stats().Sent != 4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			// blksize 512: one wait per ACK, most of them direct.
			blocks := uint64(len(want)/512 + 1)
			direct, netpoll := srv.waits.direct.Load(), srv.waits.netpoll.Load()
			if tc.direct && direct < blocks {
				t.Errorf("%d direct waits (%d in the netpoller) for 4 downloads, want at least %d (one per block of one)", direct, netpoll, blocks)
			}
			if !tc.direct && (direct != 0 || netpoll < blocks) {
				t.Errorf("%d direct waits, %d in the netpoller; want none direct, at least %d in the netpoller", direct, netpoll, blocks)
			}
			if s := srv.Stats(); s.Sent != 4 || s.Failed != 0 {
				t.Fatalf("stats %+v, want 4 sent, none failed", s)
			}
		})
	}
}

// TestTFTPDirectWaitTimeouts: with a timeout whose backoff stays shorter
// than the direct wait's slice, retransmissions come from the direct wait
// itself; with a client silent for longer than a slice, the loop parks in
// the netpoller and its next ACK is still answered at once, not at the
// next timeout.
func TestTFTPDirectWaitTimeouts(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("the direct wait needs GOMAXPROCS >= 2")
	}
	t.Run("retransmit", func(t *testing.T) {
		// The waits back off 2, 4, 8, 8 ms: each under tftpDirectSlice, so
		// no direct wait can run a whole slice and park the loop. (With
		// 3 ms the last waits were 12 ms; a direct wait that woke late
		// from its 10 ms slice under load handled the timeout itself and
		// then parked, and the next timeout came from the netpoller.)
		srv, err := NewTFTP(TFTPConfig{Timeout: 2 * time.Millisecond, Retries: 3, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		addr, _, _ := startTFTPServer(t, srv)
		c := newRawClient(t, addr)
		c.sendServer(rrq(FileBIOS, "octet"))
		for range 4 { // the first send and 3 retransmissions
			wantData(t, c.mustRecv(), 1)
		}
		wantError(t, c.mustRecv(), tftpErrUndefined, "transfer failed")
		// The netpoller: the wait that read the request, and perhaps the
		// idle wait after the failure; none while the transfer was on.
		if d, n := srv.waits.direct.Load(), srv.waits.netpoll.Load(); d < 4 || n > 2 {
			t.Errorf("%d direct waits, %d in the netpoller; want one direct per timeout at least, at most 2 in the netpoller", d, n)
		}
	})
	t.Run("quiet client", func(t *testing.T) {
		srv, err := NewTFTP(TFTPConfig{Timeout: 2 * time.Second, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		addr, _, _ := startTFTPServer(t, srv)
		c := newRawClient(t, addr)
		c.sendServer(rrq(FileBIOS, "octet"))
		wantData(t, c.mustRecv(), 1)
		before := srv.waits.netpoll.Load()
		time.Sleep(5 * tftpDirectSlice) // a slice runs out: the loop parks
		c.sendPeer(ack(1))
		wantData(t, c.recvWithin(t, time.Second), 2)
		if n := srv.waits.netpoll.Load(); n == before {
			t.Errorf("no wait in the netpoller during %v of silence", 5*tftpDirectSlice)
		}
		for k := uint16(2); k < 6; k++ {
			c.sendPeer(ack(k))
			wantData(t, c.recvWithin(t, time.Second), k+1)
		}
	})
}

// recvWithin is mustRecv with a shorter bound: well under the transfer's
// 2 s timeout, so a packet sent only by the retransmission timer fails it.
func (c *rawClient) recvWithin(t *testing.T, d time.Duration) []byte {
	t.Helper()
	p := c.recv(d)
	if p == nil {
		t.Fatal(fmt.Sprintf("no packet within %v", d))
	}
	return p
}
