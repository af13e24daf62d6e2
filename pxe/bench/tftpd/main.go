// Command tftpd runs lpmos's TFTP server (package pxe) alone, for
// tftp-vs-dnsmasq.sh: tftpd [listen address, default 127.0.0.1:6969].
// It serves the embedded iPXE binaries until SIGINT/SIGTERM.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/lpmos/lpmos/pxe"
)

func main() {
	addr := "127.0.0.1:6969"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := pxe.TFTPConfig{Addr: addr, Logger: log}
	// LPMOS_TFTP_THREADS: TFTPConfig.ThreadTransfers (for comparing variants).
	if v := os.Getenv("LPMOS_TFTP_THREADS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tftpd: LPMOS_TFTP_THREADS:", err)
			os.Exit(2)
		}
		cfg.ThreadTransfers = n
	}
	srv, err := pxe.NewTFTP(cfg)
	if err == nil {
		err = srv.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tftpd:", err)
		os.Exit(1)
	}
}
