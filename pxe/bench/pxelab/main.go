// Command pxelab runs the pxe services alone for a lab boot (qemu in a
// network namespace): DHCP (proxy or full), TFTP and the boot HTTP handler,
// every MAC allowed, every script deciding the same action.
//
//	pxelab SERVER_IP MODE ACTION [BOOTDIR]
//	pxelab 10.55.0.1 full local
//
// MODE is proxy or full (full hands out SERVER_IP/24 .100-.150); ACTION is
// local or discover. HTTP listens on SERVER_IP:8081. Stops on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lpmos/lpmos/pxe"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pxelab:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) < 4 {
		return errors.New("usage: pxelab SERVER_IP proxy|full local|discover [BOOTDIR]")
	}
	ip := net.ParseIP(os.Args[1]).To4()
	if ip == nil {
		return fmt.Errorf("bad server IP %q", os.Args[1])
	}
	mode, action := pxe.Mode(os.Args[2]), pxe.Action(os.Args[3])
	bootDir := os.TempDir()
	if len(os.Args) > 4 {
		bootDir = os.Args[4]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	allow := pxe.MachinesFunc(func(context.Context, net.HardwareAddr) (bool, error) { return true, nil })
	base := net.IP{ip[0], ip[1], ip[2], 0}
	dhcp, err := pxe.NewProxyDHCP(pxe.DHCPConfig{
		Mode: mode, ServerIP: ip, HTTPPort: 8081, Machines: allow, Logger: log,
		Full: pxe.FullDHCP{
			RangeStart: net.IPv4(base[0], base[1], base[2], 100), RangeEnd: net.IPv4(base[0], base[1], base[2], 150),
			Netmask: net.CIDRMask(24, 32), Router: ip, LeaseTime: time.Hour, Leases: &pxe.MemLeases{},
		},
	})
	if err != nil {
		return err
	}
	tftp, err := pxe.NewTFTP(pxe.TFTPConfig{Logger: log})
	if err != nil {
		return err
	}
	h, err := pxe.NewBootHandler(pxe.BootConfig{
		Decider: pxe.DeciderFunc(func(context.Context, net.HardwareAddr) (pxe.Decision, error) {
			return pxe.Decision{Action: action}, nil
		}),
		AgentURL: "http://" + ip.String() + ":8081", BaseURL: "http://" + ip.String() + ":8081",
		BootDir: bootDir, Logger: log,
	})
	if err != nil {
		return err
	}
	hs := &http.Server{Addr: ip.String() + ":8081", Handler: h}
	errc := make(chan error, 3)
	go func() { errc <- dhcp.Start(ctx) }()
	go func() { errc <- tftp.Start(ctx) }()
	go func() {
		go func() { <-ctx.Done(); hs.Close() }()
		if err := hs.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	var all error
	for range 3 {
		if err := <-errc; err != nil {
			all = errors.Join(all, err)
			stop()
		}
	}
	return all
}
