// Command lpmos-agent is the lpmos provisioning agent. As /init of the lpmos
// initramfs it reads its settings from the kernel command line, brings the
// machine's network up, reports the hardware, waits for approval, writes
// the OS image and reboots. Run by hand without --disk it is the seed's
// demo: every stage is reported to a real lpmos and nothing is written.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/config"
	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/logring"
	"github.com/lpmos/lpmos/agent/pid1"
	"github.com/lpmos/lpmos/agent/runner"
	"github.com/lpmos/lpmos/agent/wire"
)

func main() {
	if pid1.IsInit() {
		runInit() // never returns
	}
	os.Exit(runByHand(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// runByHand is the agent started from a shell.
func runByHand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.FromArgs(args, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "lpmos-agent:", err)
		return 2
	}
	if cfg.HardwareJSON {
		report, err := hw.Collect(cfg.SysRoot)
		if err != nil {
			fmt.Fprintln(stderr, "lpmos-agent: warning:", err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintln(stderr, "lpmos-agent:", err)
			return 1
		}
		return 0
	}
	if cfg.Disk == "" {
		// The first line, before any log: an operator must know at once that
		// this run cannot touch a disk.
		fmt.Fprintln(stderr, "lpmos-agent: demo mode: no --disk given, nothing will be written to any disk")
	}
	ring := logring.New(50)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(stderr, ring), nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.PowerOff {
		log.Warn("--poweroff only applies when the agent runs as PID 1; ignored")
	}
	r, err := newRunner(cfg, log, ring, false)
	if err == nil {
		err = r.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(stderr, "lpmos-agent:", explain(err))
		return 1
	}
	return 0
}

// powerManagedWait is how long a completed power-managed machine waits for
// the region's BMC power cycle before rebooting by itself.
const powerManagedWait = 10 * time.Minute

// runInit is the agent as PID 1 of the initramfs.
func runInit() {
	// The kernel gives init the console on fds 0-2.
	ring := logring.New(50)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, ring), nil))
	fatal := func(cfg config.Config, err error) {
		fmt.Fprintf(os.Stderr, "\nlpmos-agent: FATAL: %s\n", explain(err))
		if cfg.PowerOff {
			fmt.Fprintln(os.Stderr, "lpmos-agent: powering off")
			if err := pid1.Restart(true); err != nil {
				fmt.Fprintln(os.Stderr, "lpmos-agent:", err)
			}
		}
		fmt.Fprintln(os.Stderr, "lpmos-agent: halted; power-cycle the machine to retry")
		pid1.Halt()
	}
	if err := pid1.MountEarly(); err != nil {
		log.Warn("mounting kernel file systems", "error", err)
	}
	ctx := context.Background()
	go pid1.Reap(ctx)
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		fatal(config.Config{}, fmt.Errorf("reading the kernel command line: %w", err))
	}
	cfg, err := config.ParseCmdline(strings.TrimSpace(string(cmdline)))
	if err != nil {
		fatal(cfg, err)
	}
	log.Info("lpmos-agent starting as init", "server", cfg.ServerURL, "task", cfg.TaskID, "mac", cfg.MAC, "disk", cfg.Disk)
	if err := pid1.LoadModules(log, pid1.ModuleOrderFile, pid1.KernelRelease()); err != nil {
		log.Warn("some kernel modules did not load", "error", err)
	}
	nic, err := pid1.SetupNetwork(ctx, log, cfg.IP, cfg.MAC)
	if err != nil {
		fatal(cfg, fmt.Errorf("network: %w", err))
	}
	if cfg.MAC == "" {
		cfg.MAC = nic.MAC
	}
	// Failures after this point are reported to the server by the runner;
	// a failed install keeps the agent up, waiting for a retry.
	r, err := newRunner(cfg, log, ring, true)
	if err != nil {
		fatal(cfg, err)
	}
	if err := r.Run(ctx); err != nil {
		if errors.As(err, new(*runner.BootAgainError)) {
			// Only a new PXE boot brings a new boot token.
			fmt.Fprintf(os.Stderr, "lpmos-agent: %v\nlpmos-agent: rebooting in 10 s\n", err)
			time.Sleep(10 * time.Second)
			if err := pid1.Restart(false); err != nil {
				fatal(cfg, err)
			}
		}
		fatal(cfg, err)
	}
	if r.PowerManaged {
		// The region sets the next boot to disk and power-cycles the
		// machine through its BMC; rebooting here would race it. If the
		// BMC never comes, reboot anyway after a while.
		fmt.Fprintf(os.Stderr, "lpmos-agent: install complete; this machine is power-managed: the region reboots it through its BMC (waiting; rebooting by itself in %s otherwise)\n", powerManagedWait)
		pid1.Sync()
		time.Sleep(powerManagedWait)
		fmt.Fprintln(os.Stderr, "lpmos-agent: no power cycle from the region; rebooting")
		if err := pid1.Restart(false); err != nil {
			fatal(cfg, err)
		}
	}
	action := "rebooting"
	if cfg.PowerOff {
		action = "powering off"
	}
	fmt.Fprintf(os.Stderr, "lpmos-agent: install complete, %s\n", action)
	if err := pid1.Restart(cfg.PowerOff); err != nil {
		fatal(cfg, err)
	}
	pid1.Halt()
}

func newRunner(cfg config.Config, log *slog.Logger, ring *logring.Ring, autoDisk bool) (*runner.Runner, error) {
	// With a pinned CA every call, the session exchange, and the image
	// download go over HTTPS to a server whose certificate chains to it.
	httpc := &http.Client{}
	if cfg.CAPin != "" {
		var err error
		if httpc, err = client.PinnedHTTPClient(cfg.CAPin); err != nil {
			return nil, err
		}
	}
	return &runner.Runner{
		API:       client.New(client.Options{BaseURL: cfg.ServerURL, Logger: log, HTTPClient: httpc}),
		Log:       log,
		Ring:      ring,
		Hardware:  func() (wire.Hardware, error) { return hw.Collect(cfg.SysRoot) },
		MAC:       cfg.MAC,
		TaskID:    cfg.TaskID,
		Disk:      cfg.Disk,
		AutoDisk:  autoDisk,
		BootToken: cfg.Token,
		// As PID 1 a failed install keeps the agent up: a retry of the
		// task is picked up without anyone at the machine.
		StayAfterFailure: autoDisk,
		ImageClient:      httpc,
	}, nil
}

// explain adds what the operator can do about well-known failures.
func explain(err error) string {
	switch {
	case errors.As(err, new(*runner.BootAgainError)):
		return err.Error() + " (by hand: fetch /boot/<mac>.ipxe from the agent API and run again with --token <its lpmos_token>)"
	case client.IsPin(err):
		return err.Error() + " (the region's certificate does not chain to the CA pinned on the kernel line: boot again from this cluster's region, or check lpmos_ca)"
	case client.IsAuth(err):
		return err.Error() + " (the server refused this agent's credentials: boot the machine again to get a fresh boot token)"
	}
	return err.Error()
}
