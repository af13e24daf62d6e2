package pxe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TFTPConfig configures the TFTP service.
type TFTPConfig struct {
	// Addr is the listen address; default ":69".
	Addr string
	// Interface, when set, binds the listening socket and every transfer's
	// socket to that device.
	Interface string
	// Files is the set served; default IPXEFiles(). Only its top-level boot
	// binaries (.kpxe, .pxe, .efi) are served.
	Files fs.FS
	// Timeout is the first retransmission timeout; default 2 s. Each
	// retransmission of the same packet doubles it, up to 4x. A client's
	// RFC 2349 timeout option (1-10 s) replaces it for its transfer.
	Timeout time.Duration
	// Retries is how many times an unacknowledged packet is sent again
	// before the transfer is given up; default 5.
	Retries int
	// MaxTransfers bounds the transfers in flight; a request beyond it is
	// answered with an error. Default 128.
	MaxTransfers int
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// NoIOUring reads and sends each datagram with its own read and
	// sendto even where io_uring is available (by default a loop wake-up
	// with several transfers' ACKs reads them with one io_uring_enter and
	// sends every answer with one more); for tests and benchmarks.
	NoIOUring bool
	// NetpollWait waits for datagrams in Go's netpoller even while
	// transfers are in flight (by default the loop then blocks in
	// epoll_pwait itself); for tests and benchmarks.
	NetpollWait bool
}

// TFTP is a read-only TFTP server for the iPXE binaries (RFC 1350 with the
// RFC 2347 options blksize (RFC 2348), tsize and timeout (RFC 2349) and
// windowsize (RFC 7440)). Write requests, unknown names and any path
// ("../x", "/x", "a/b") get a TFTP error packet; so do netascii and mail
// mode requests (the files are binaries).
//
// Like dnsmasq, one event loop serves every transfer: a goroutine waits on
// an epoll set holding the listening socket and each transfer's UDP socket
// (connected to its client, from an ephemeral port). While 1-4 transfers
// are in flight the loop blocks in epoll_pwait on that set itself (a
// sequential download: 3 system calls per block); otherwise the set waits
// in Go's netpoller, with the nearest retransmission deadline as its read
// deadline (see tftpLoop.run). The loop's other system calls cannot block
// and are raw (see tftp_raw.go: through Syscall they woke sysmon into
// 20 µs polling). A
// block costs one wake-up for its ACK (fewer when ACKs of several
// transfers arrive together), a recv and a send: no goroutine switch, Go
// timer or allocation per block; one thread wake-up per block in all, as
// dnsmasq. When a wake-up finds several transfers' ACKs, they are read
// with one io_uring_enter and every answer goes out with one more
// (tftp_uring.go), each on its transfer's own socket: a send per datagram
// woke a client per send, which preempted the loop before its next
// answer. The per-transfer socket stays: its ephemeral port is what an
// off-path attacker must guess to inject DATA or an ERROR into a
// download. Where io_uring cannot be set up (disabled by sysctl, seccomp,
// an old kernel) each datagram has its own read and sendto, as before.
// What a hostile client can get:
// one DATA (or OACK) packet per request, a blksize no larger than the
// interface MTU allows, at most MaxTransfers transfers (one per client
// address and port), each holding a socket and its state (blocks are
// built in the loop's one send buffer, up to 128 KiB), and no transfer
// longer than 10 minutes.
type TFTP struct {
	cfg   TFTPConfig
	log   *slog.Logger
	files map[string]bool
	stats tftpCounters

	mu   sync.Mutex
	mtus map[int]tftpMTU

	// ringSetup replaces newTFTPRing (tests: a failing setup).
	ringSetup func() (*tftpRing, error)
	// ringUp: the running loop sends through io_uring.
	ringUp atomic.Bool
	// waits counts the loop's waits by where it waited (tests).
	waits struct{ direct, netpoll atomic.Uint64 }
}

type tftpMTU struct {
	mtu int
	at  time.Time
}

// tftpMaxTransferTime bounds one transfer's duration, whatever the client
// does (slow ACKs with blksize 8 could otherwise hold a slot for days).
const tftpMaxTransferTime = 10 * time.Minute

// TFTPStats counts transfers by outcome: Sent completed, Refused were
// answered with an error (unknown file, write request, bad request, too
// many transfers), Failed broke off (timeout, client error, shutdown).
type TFTPStats struct{ Sent, Refused, Failed uint64 }

type tftpCounters struct{ sent, refused, failed atomic.Uint64 }

// Stats returns the transfer counters.
func (t *TFTP) Stats() TFTPStats {
	return TFTPStats{Sent: t.stats.sent.Load(), Refused: t.stats.refused.Load(), Failed: t.stats.failed.Load()}
}

// NewTFTP checks cfg and returns the service.
func NewTFTP(cfg TFTPConfig) (*TFTP, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":69"
	}
	if cfg.Files == nil {
		cfg.Files = IPXEFiles()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 128
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &TFTP{cfg: cfg, log: cfg.Logger.With("service", "tftp"), files: make(map[string]bool),
		mtus: make(map[int]tftpMTU)}
	for _, n := range bootBinaries(cfg.Files) {
		t.files[n] = true
	}
	if len(t.files) == 0 {
		return nil, errors.New("tftp: no boot binaries to serve")
	}
	return t, nil
}

// Start listens on Addr and serves until ctx is done; transfers in flight
// are then ended with an error packet and waited for before it returns.
func (t *TFTP) Start(ctx context.Context) error {
	conn, err := listenUDP(ctx, t.cfg.Addr, t.cfg.Interface)
	if err != nil {
		return fmt.Errorf("tftp: listen %s: %w", t.cfg.Addr, err)
	}
	t.log.InfoContext(ctx, "tftp listening", "addr", conn.LocalAddr().String(), "files", strings.Join(bootBinaries(t.cfg.Files), ","))
	return t.serve(ctx, conn)
}

// maxBlksize is the largest block that fits one unfragmented datagram on
// interface ifindex (MTU - 20 IP - 8 UDP - 4 TFTP), looked up at most every
// 30 s per interface; 1468 (a 1500-byte Ethernet MTU) when unknown.
func (t *TFTP) maxBlksize(ifindex int) int {
	const fallback = 1468
	if ifindex <= 0 {
		return fallback
	}
	t.mu.Lock()
	m, ok := t.mtus[ifindex]
	t.mu.Unlock()
	if !ok || time.Since(m.at) > 30*time.Second {
		m = tftpMTU{mtu: 0, at: time.Now()}
		if ifc, err := net.InterfaceByIndex(ifindex); err == nil {
			m.mtu = ifc.MTU
		}
		t.mu.Lock()
		t.mtus[ifindex] = m
		t.mu.Unlock()
	}
	if m.mtu <= 0 {
		return fallback
	}
	return max(512, min(tftpMaxBlksize, m.mtu-32))
}
