package app

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
)

// normalizeServer turns --server host:port into https://host:port (the
// control plane's default); a URL with a scheme is kept as given.
func normalizeServer(s string) string {
	s = strings.TrimSpace(s)
	if s != "" && !strings.Contains(s, "://") {
		return "https://" + s
	}
	return s
}

// printTasksWide is `task list -o wide`: the table plus attempt, target
// disk, hardware, last change and reason.
func printTasksWide(w io.Writer, tasks []store.Task) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMAC\tREGION\tOS\tHOSTNAME\tSTATUS\tATTEMPT\tPROGRESS\tTARGET DISK\tHARDWARE\tUPDATED\tCREATED\tREASON")
	for _, t := range tasks {
		prog := "-"
		if p := t.Progress; p != nil {
			prog = fmt.Sprintf("%d%% %s", p.Percentage, p.Stage)
		}
		disk := "-"
		if d := t.TargetDisk; d != nil {
			disk = "/dev/" + d.Name
		}
		hw := "-"
		if h := t.Hardware; h != nil {
			hw = hardwareSummary(h.DMI.Vendor, h.DMI.Product, h.CPU.Threads, h.Memory.TotalGB)
		}
		host, reason := dash(t.Spec.Hostname), dash(t.Status.Reason)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Spec.TargetMAC, t.Spec.RegionID,
			t.Spec.OSType, t.Spec.OSVersion, host, t.Status.Status, t.Status.Attempt, prog, disk, hw,
			t.Status.UpdatedAt.Local().Format(time.DateTime), t.Spec.CreatedAt.Local().Format(time.DateTime), reason)
	}
	return tw.Flush()
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// hardwareSummary is "Dell Inc. PowerEdge R640, 64 threads, 256 GB",
// leaving out what the machine did not report (no "  , 2 threads").
func hardwareSummary(vendor, product string, threads, memGB int) string {
	var parts []string
	if name := strings.TrimSpace(strings.TrimSpace(vendor) + " " + strings.TrimSpace(product)); name != "" {
		parts = append(parts, name)
	}
	if threads > 0 {
		parts = append(parts, fmt.Sprintf("%d threads", threads))
	}
	if memGB > 0 {
		parts = append(parts, fmt.Sprintf("%d GB", memGB))
	}
	if len(parts) == 0 {
		return "unknown hardware"
	}
	return strings.Join(parts, ", ")
}

// refuseUnknownSubcommands makes every command that only groups others
// (task, image, token...) fail on an argument that is not one of its
// subcommands, with cobra's suggestion, instead of printing its help and
// exiting 0 (`lpmos task aprove ID`). Without arguments it prints its help.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		refuseUnknownSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil || !cmd.HasParent() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("%s (run '%s --help' for its commands)", msg, c.CommandPath())
	}
}

// buildInfo describes this binary from what the Go toolchain recorded:
// the module version (a tag for `go install ...@v1.2.3`, or the
// pseudo-version), the VCS revision and time, whether the tree was
// modified, and the Go version. releaseVersion (-ldflags -X main.version)
// wins when set.
func buildInfo(releaseVersion string) string {
	version, rev, date, dirty := releaseVersion, "unknown", "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if (version == "" || version == "dev") && bi.Main.Version != "" {
			version = bi.Main.Version // "(devel)" for a plain `go build` in a checkout
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				date = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if dirty {
		rev += " (modified)"
	}
	return fmt.Sprintf("lpmos %s\ncommit: %s\ndate: %s\ngo: %s %s/%s\n", version, rev, date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
