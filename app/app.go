// Package app is the lpmos command line: it reads flags and environment,
// wires the services of each role and runs them until interrupted. It is
// the only package that reads flags.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix: every flag --foo-bar can also come from LPMOS_FOO_BAR.
const envPrefix = "LPMOS_"

// Main runs the CLI with args and returns the process exit code.
func Main(version string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewRoot(version, os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "lpmos: %v\n", err)
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		var ce interface{ ExitCode() int }
		if errors.As(err, &ce) {
			return ce.ExitCode()
		}
		return 1
	}
	return 0
}

type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// NewRoot builds the command tree. Output goes to out and errOut so tests
// can run commands in process.
func NewRoot(version string, out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "lpmos",
		Short: "Bare-metal OS provisioning: PXE boot, live dashboard, image install",
		Long: `lpmos provisions bare-metal servers. A server PXE-boots, a small agent reports
its hardware, an operator approves it in a live dashboard, and the agent writes
an OS image to disk while every browser watches the progress.

Every flag can also be set with an environment variable: --data-dir is
LPMOS_DATA_DIR, --listen-addr is LPMOS_LISTEN_ADDR, and so on.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(
		newServeCmd(version),
		newTaskCmd(),
		newImageCmd(),
		newInitramfsCmd(),
		newVersionCmd(version),
		newJoinCmd(version), newTokenCmd(), newMemberCmd(), newLeaveCmd(),
		newPowerCmd(),
		newBackupCmd(version), newRestoreCmd(), // app/backup.go
		newMachineCmd(), newRegionCmd(), // app/machine.go
	)
	refuseUnknownSubcommands(root) // app/cli_extra.go
	return root
}

// applyEnv fills every flag the user did not set on the command line from
// its LPMOS_* environment variable.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s=%q: %w", name, v, err))
		}
	})
	return errors.Join(errs...)
}

func newVersionCmd(version string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the lpmos version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprint(cmd.OutOrStdout(), buildInfo(version)) // app/cli_extra.go
		},
	}
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
