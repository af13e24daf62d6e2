package pxe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
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
}

// TFTP is a read-only TFTP server for the iPXE binaries (RFC 1350 with the
// RFC 2347 options blksize (RFC 2348), tsize and timeout (RFC 2349) and
// windowsize (RFC 7440)). Write requests, unknown names and any path
// ("../x", "/x", "a/b") get a TFTP error packet; so do netascii and mail
// mode requests (the files are binaries).
//
// Each transfer runs on its own UDP socket, connected to the client, from
// an ephemeral port, with blocking reads (a receive timeout drives
// retransmission): one wake-up per ACK and no timer or allocation per
// block. What a hostile client can get: one DATA (or OACK) packet per
// request, a blksize no larger than the interface MTU allows, at most
// MaxTransfers transfers (one per client address and port), each holding
// one block buffer, and no transfer longer than 10 minutes.
type TFTP struct {
	cfg   TFTPConfig
	log   *slog.Logger
	files map[string]bool
	stats tftpCounters

	mu     sync.Mutex
	active map[netip.AddrPort]bool
	mtus   map[int]tftpMTU
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
		active: make(map[netip.AddrPort]bool), mtus: make(map[int]tftpMTU)}
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

// serve reads requests from conn until ctx is done, then closes conn and
// waits for the transfers.
func (t *TFTP) serve(ctx context.Context, conn net.PacketConn) error {
	var pc *ipv4.PacketConn
	if uc, ok := conn.(*net.UDPConn); ok {
		pc = ipv4.NewPacketConn(uc)
		if pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true) != nil {
			pc = nil
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, tftpMaxRequest+1)
	for {
		var (
			n   int
			cm  *ipv4.ControlMessage
			src net.Addr
			err error
		)
		if pc != nil {
			n, cm, src, err = pc.ReadFrom(buf)
		} else {
			n, src, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			conn.Close()
			return fmt.Errorf("tftp: read: %w", err)
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		peer := ua.AddrPort()
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		var local netip.Addr
		ifindex := 0
		if cm != nil {
			if a, ok := netip.AddrFromSlice(cm.Dst); ok {
				local = a.Unmap()
			}
			ifindex = cm.IfIndex
		}
		if local == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || !local.Is4() {
			local = netip.IPv4Unspecified() // the kernel picks the source
		}
		t.request(ctx, &wg, conn, pc, buf[:n], peer, local, ifindex)
	}
}

// request answers one packet read on the listening port: an RRQ for a
// served file starts a transfer, any other request is refused from this
// port, and what is not a request is dropped (never an error to an error,
// nothing to amplify).
func (t *TFTP) request(ctx context.Context, wg *sync.WaitGroup, conn net.PacketConn, pc *ipv4.PacketConn,
	b []byte, peer netip.AddrPort, local netip.Addr, ifindex int) {
	req, err := parseTFTPRequest(b)
	if errors.Is(err, errNotRequest) {
		return
	}
	refuse := func(code uint16, msg, reason string) {
		t.stats.refused.Add(1)
		t.log.InfoContext(ctx, "tftp: refused", "file", req.file, "peer", peer.String(), "reason", reason)
		pkt := appendTFTPError(nil, code, msg)
		dst := net.UDPAddrFromAddrPort(peer)
		if pc != nil {
			var cm *ipv4.ControlMessage
			if !local.IsUnspecified() {
				cm = &ipv4.ControlMessage{Src: local.AsSlice()}
			}
			_, _ = pc.WriteTo(pkt, cm, dst)
		} else {
			_, _ = conn.WriteTo(pkt, dst)
		}
	}
	switch {
	case err != nil:
		refuse(tftpErrIllegalOp, "malformed request", err.Error())
	case req.op == tftpWRQ:
		t.log.WarnContext(ctx, "tftp: write request refused", "file", req.file, "peer", peer.String())
		refuse(tftpErrAccess, "access violation: this server is read-only", "write request")
	case !t.files[req.file]:
		refuse(tftpErrNotFound, "file not found", "not an iPXE binary served here")
	case req.mode != "octet":
		refuse(tftpErrUndefined, "only octet mode is served", "mode "+req.mode)
	default:
		switch t.admit(peer) {
		case admitDuplicate:
			// A retransmitted RRQ: the transfer already running answers it.
		case admitFull:
			refuse(tftpErrUndefined, "too many transfers, try again later", "too many transfers")
		case admitOK:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer t.release(peer)
				t.transfer(ctx, req, peer, local, ifindex)
			}()
		}
	}
}

type admission int

const (
	admitOK admission = iota
	admitDuplicate
	admitFull
)

// admit reserves a transfer slot for peer.
func (t *TFTP) admit(peer netip.AddrPort) admission {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active[peer] {
		return admitDuplicate
	}
	if len(t.active) >= t.cfg.MaxTransfers {
		return admitFull
	}
	t.active[peer] = true
	return admitOK
}

func (t *TFTP) release(peer netip.AddrPort) {
	t.mu.Lock()
	delete(t.active, peer)
	t.mu.Unlock()
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
