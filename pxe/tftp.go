package pxe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
)

// TFTPConfig configures the TFTP service.
type TFTPConfig struct {
	// Addr is the listen address; default ":69".
	Addr string
	// Interface, when set, binds the listening socket to that device.
	Interface string
	// Files is the set served; default IPXEFiles(). Only its top-level boot
	// binaries (.kpxe, .pxe, .efi) are served.
	Files fs.FS
	// Timeout is the per-packet retransmission timeout; default 2 s.
	Timeout time.Duration
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// TFTP is a read-only TFTP server for the iPXE binaries. Write requests,
// unknown names and any path ("../x", "/x", "a/b") get a TFTP error packet.
// The blksize and tsize options are supported.
type TFTP struct {
	cfg   TFTPConfig
	log   *slog.Logger
	files map[string]bool
	stats tftpCounters
}

// TFTPStats counts transfers by outcome: Sent completed, Refused were
// answered with an error (unknown file, write request), Failed broke off
// (timeout, client error).
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &TFTP{cfg: cfg, log: cfg.Logger.With("service", "tftp"), files: make(map[string]bool)}
	for _, n := range bootBinaries(cfg.Files) {
		t.files[n] = true
	}
	if len(t.files) == 0 {
		return nil, errors.New("tftp: no boot binaries to serve")
	}
	return t, nil
}

// Start listens on Addr and serves until ctx is done; transfers in flight
// are finished (or time out) before it returns.
func (t *TFTP) Start(ctx context.Context) error {
	conn, err := listenUDP(ctx, t.cfg.Addr, t.cfg.Interface)
	if err != nil {
		return fmt.Errorf("tftp: listen %s: %w", t.cfg.Addr, err)
	}
	t.log.InfoContext(ctx, "tftp listening", "addr", conn.LocalAddr().String(), "files", strings.Join(bootBinaries(t.cfg.Files), ","))
	return t.serve(ctx, conn)
}

// serve runs the server on conn until ctx is done.
func (t *TFTP) serve(ctx context.Context, conn net.PacketConn) error {
	s := tftp.NewServer(
		func(name string, rf io.ReaderFrom) error { return t.read(ctx, name, rf) },
		func(name string, _ io.WriterTo) error {
			t.log.WarnContext(ctx, "tftp: write request refused", "file", name)
			return errors.New("access violation: this server is read-only")
		},
	)
	s.SetTimeout(t.cfg.Timeout)
	s.SetHook(tftpHook{ctx: ctx, log: t.log, stats: &t.stats})
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		s.Shutdown() // closes conn, waits for transfers
		close(stopped)
	}()
	err := s.Serve(conn)
	close(done)
	<-stopped
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("tftp: serve: %w", err)
	}
	return nil
}

func (t *TFTP) read(ctx context.Context, name string, rf io.ReaderFrom) error {
	var peer string
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		a := ot.RemoteAddr()
		peer = a.String()
	}
	log := t.log.With("file", name, "peer", peer)
	if !t.files[name] {
		log.InfoContext(ctx, "tftp: refused", "reason", "not an iPXE binary served here")
		return fmt.Errorf("file not found: %q", name)
	}
	f, err := t.cfg.Files.Open(name)
	if err != nil {
		log.ErrorContext(ctx, "tftp: open", "err", err)
		return errors.New("file not found")
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(st.Size())
	}
	if _, err := rf.ReadFrom(f); err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	return nil
}

type tftpHook struct {
	ctx   context.Context
	log   *slog.Logger
	stats *tftpCounters
}

func (h tftpHook) OnSuccess(st tftp.TransferStats) {
	h.stats.sent.Add(1)
	h.log.InfoContext(h.ctx, "tftp: sent", "file", st.Filename, "peer", st.RemoteAddr.String(),
		"duration", st.Duration.String(), "datagrams", st.DatagramsSent)
}

func (h tftpHook) OnFailure(st tftp.TransferStats, err error) {
	if msg := err.Error(); strings.HasPrefix(msg, "file not found") || strings.HasPrefix(msg, "access violation") {
		h.stats.refused.Add(1) // the errors read and write answer with
	} else {
		h.stats.failed.Add(1)
	}
	h.log.InfoContext(h.ctx, "tftp: transfer failed", "file", st.Filename, "peer", st.RemoteAddr.String(), "err", err)
}
