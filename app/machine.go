package app

import (
	"fmt"
	"io"
	"net/url"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
)

// newMachineCmd is `lpmos machine list|rm`: the machines that booted
// without a task (discovered), with the hardware their agent reported.
func newMachineCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:     "machine",
		Aliases: []string{"machines"},
		Short:   "List and forget machines that booted without a task (discovered)",
	}
	o.addFlags(cmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the discovered machines: MAC, region, hardware, first and last seen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var ms []store.Machine
			if err := c.do(cmd.Context(), "GET", "/api/v1/machines", nil, &ms); err != nil {
				return fmt.Errorf("list machines: %w", err)
			}
			return printMachines(cmd.OutOrStdout(), o.output, ms)
		},
	}
	rm := &cobra.Command{
		Use:               "rm MAC",
		Aliases:           []string{"remove", "delete"},
		Short:             "Forget a discovered machine (it shows up again when its agent reports)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeMachineMACs(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/machines/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("remove machine %s: %w", args[0], err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "machine %s removed\n", args[0])
			return err
		},
	}
	cmd.AddCommand(list, rm)
	return cmd
}

func printMachines(w io.Writer, output string, ms []store.Machine) error {
	sort.Slice(ms, func(i, j int) bool { return ms[i].MAC < ms[j].MAC })
	switch {
	case structured(output):
		return printData(w, output, ms)
	case output == "name":
		names := make([]string, 0, len(ms))
		for _, m := range ms {
			names = append(names, m.MAC)
		}
		return printNames(w, names)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "MAC\tREGION\tHARDWARE\tFIRST SEEN\tLAST SEEN"
	if output == "wide" {
		head += "\tDISKS\tNICS\tBOOT"
	}
	fmt.Fprintln(tw, head)
	for _, m := range ms {
		hw := "-"
		if h := m.Hardware; h != nil {
			hw = hardwareSummary(h.DMI.Vendor, h.DMI.Product, h.CPU.Threads, h.Memory.TotalGB)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", m.MAC, m.RegionID, hw, m.FirstSeen.Local().Format(time.DateTime), m.LastSeen.Local().Format(time.DateTime))
		if output == "wide" {
			disks, nics, boot := 0, 0, "-"
			if h := m.Hardware; h != nil {
				disks, nics, boot = len(h.Disks), len(h.NICs), dash(h.BootMode)
			}
			fmt.Fprintf(tw, "\t%d\t%d\t%s", disks, nics, boot)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// newRegionCmd is `lpmos region list`: the live regions.
func newRegionCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:     "region",
		Aliases: []string{"regions"},
		Short:   "List the regions (regional services registered in the cluster)",
	}
	o.addFlags(cmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the live regions: id, member, agent API URL, started",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var rs []store.Region
			if err := c.do(cmd.Context(), "GET", "/api/v1/regions", nil, &rs); err != nil {
				return fmt.Errorf("list regions: %w", err)
			}
			return printRegions(cmd.OutOrStdout(), o.output, rs) // app/output_lists.go
		},
	}
	cmd.AddCommand(list)
	return cmd
}

// newTaskRmCmd is `lpmos task rm ID...`: delete ended tasks and their history.
func newTaskRmCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"delete"},
		Short:   "Delete ended tasks (completed, failed, cancelled) with their history",
		Long: `Delete tasks that have ended (completed, failed or cancelled), with their
hardware report, progress and event history (DELETE /api/v1/tasks/{id}?purge=true).
An active task is refused (409 naming its status): cancel it first with
'lpmos task cancel ID'. 'lpmos task cancel' alone keeps the task and its history.`,
		Example:           "  lpmos task rm 0b5c...\n  lpmos task rm $(lpmos task list --status completed -o name)",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeTaskIDs(o, "completed", "failed", "cancelled"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var failed int
			for _, id := range args {
				var t store.Task
				if err := c.do(cmd.Context(), "DELETE", "/api/v1/tasks/"+url.PathEscape(id)+"?purge=true", nil, &t); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "lpmos: delete task %s: %v\n", id, err)
					failed++
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "task %s deleted (%s, %s)\n", t.ID, t.Status.Status, t.Spec.TargetMAC)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d task(s) not deleted", failed, len(args))
			}
			return nil
		},
	}
}
