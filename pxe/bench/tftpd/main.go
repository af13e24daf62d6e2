// Command tftpd runs lpmos's TFTP server (package pxe) alone, for
// tftp-vs-dnsmasq.sh: tftpd [listen address, default 127.0.0.1:6969].
// It serves the embedded iPXE binaries until SIGINT/SIGTERM.
// TFTPD_SENDTO=1 sends one datagram per sendto (TFTPConfig.NoIOUring), to
// compare with the io_uring batches in one run: ALT=TFTPD_SENDTO=1.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
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
	srv, err := pxe.NewTFTP(pxe.TFTPConfig{Addr: addr, Logger: log, NoIOUring: os.Getenv("TFTPD_SENDTO") == "1",
		NetpollWait: os.Getenv("TFTPD_NETPOLL") == "1"})
	if err == nil {
		err = srv.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tftpd:", err)
		os.Exit(1)
	}
}
