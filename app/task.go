package app

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

func newTaskCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Create, list, approve and follow provisioning tasks",
	}
	o.addFlags(cmd)
	cmd.AddCommand(
		newTaskCreateCmd(o), newTaskListCmd(o), newTaskGetCmd(o),
		newTaskApproveCmd(o),
		newTaskActionCmd(o, "cancel", "Cancel a task", "DELETE", ""),
		newTaskActionCmd(o, "retry", "Retry a failed or cancelled task", "POST", "/retry"),
		newTaskWatchCmd(o),
		newTaskRmCmd(o), // app/machine.go
	)
	addTaskCompletions(cmd, o) // app/completion.go
	return cmd
}

func newTaskCreateCmd(o *clientOptions) *cobra.Command {
	var req ui.CreateTaskRequest
	var nw staticNetFlags
	var bmc bmcFlags // app/power_server.go
	cmd := &cobra.Command{
		Use:     "create --mac MAC --os OS --os-version VERSION",
		Short:   "Create a task for a machine",
		Example: "  lpmos task create --mac 00:1a:2b:3c:4d:5e --os ubuntu --os-version 22.04 --hostname web-1",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rootDeviceFlag(cmd, &req); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if req.Network, err = nw.network(); err != nil {
				return err
			}
			if req.BMC, err = bmc.input(); err != nil {
				return err
			}
			var t store.Task
			if err := c.do(cmd.Context(), "POST", "/api/v1/tasks", req, &t); err != nil {
				return fmt.Errorf("create task: %w", err)
			}
			return printTasks(cmd.OutOrStdout(), o.output, t)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.TargetMAC, "mac", "", "MAC address of the machine's boot NIC (required)")
	f.StringVar(&req.RegionID, "region", "dc1", "region the machine boots in")
	f.StringVar(&req.OSType, "os", "", "OS type, e.g. ubuntu (required)")
	f.StringVar(&req.OSVersion, "os-version", "", "OS version, e.g. 22.04 (required)")
	f.StringVar(&req.Hostname, "hostname", "", "host name to configure")
	f.StringSliceVar(&req.SSHAuthorizedKeys, "ssh-key", nil, "SSH public key to authorize (repeatable)")
	f.StringVar(&req.UserData, "user-data", "", "cloud-init user data")
	f.BoolVar(&req.AllowMissingImage, "allow-missing-image", false, "create the task although the catalog has no image for --os/--os-version yet (add it before approving)")
	addRootDeviceFlag(f)
	nw.addFlags(cmd)
	bmc.addFlags(cmd)
	for _, name := range []string{"mac", "os", "os-version"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newTaskListCmd(o *clientOptions) *cobra.Command {
	var status, region, mac string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "region": region, "mac": mac} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var list ui.TaskList
			if err := c.do(cmd.Context(), "GET", "/api/v1/tasks?"+q.Encode(), nil, &list); err != nil {
				return fmt.Errorf("list tasks: %w", err)
			}
			if structured(o.output) { // always a list, even of one task
				return printData(cmd.OutOrStdout(), o.output, list.Tasks)
			}
			return printTasks(cmd.OutOrStdout(), o.output, list.Tasks...)
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only tasks in this status")
	cmd.Flags().StringVar(&region, "region", "", "only tasks of this region")
	cmd.Flags().StringVar(&mac, "mac", "", "only tasks for this MAC")
	return cmd
}

func newTaskGetCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one task with its hardware, progress and history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var d ui.TaskDetail
			if err := c.do(cmd.Context(), "GET", "/api/v1/tasks/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return fmt.Errorf("get task: %w", err)
			}
			w := cmd.OutOrStdout()
			if structured(o.output) {
				return printData(w, o.output, d)
			}
			if err := printTasks(w, "table", d.Task); err != nil {
				return err
			}
			if d.Status.Reason != "" {
				fmt.Fprintf(w, "\nreason: %s\n", d.Status.Reason)
			}
			if hw := d.Hardware; hw != nil {
				fmt.Fprintf(w, "\nhardware: %s, %d disks, %d NICs, %s boot\n",
					hardwareSummary(hw.DMI.Vendor, hw.DMI.Product, hw.CPU.Threads, hw.Memory.TotalGB), len(hw.Disks), len(hw.NICs), dash(hw.BootMode))
			}
			printTargetDisk(w, d.Task)
			printInstallDetails(w, d.Task)
			printPower(w, d.Task) // app/power_server.go
			fmt.Fprintln(w, "\nhistory:")
			for _, ev := range d.Events {
				fmt.Fprintf(w, "  %s  %s\n", ev.At.Local().Format(time.DateTime), describeEvent(ev))
			}
			return nil
		},
	}
}

func describeEvent(ev store.Event) string {
	switch ev.Kind {
	case "status":
		s := fmt.Sprintf("status %s", ev.To)
		if ev.From != "" {
			s = fmt.Sprintf("status %s -> %s", ev.From, ev.To)
		}
		if ev.Message != "" {
			s += ": " + ev.Message
		}
		return s
	case "stage":
		return fmt.Sprintf("stage %s: %s", ev.Stage, ev.Message)
	}
	return fmt.Sprintf("%s: %s", ev.Kind, strings.ReplaceAll(ev.Message, "\n", "\n      | "))
}

func newTaskActionCmd(o *clientOptions, name, short, method, suffix string) *cobra.Command {
	return &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var t store.Task
			if err := c.do(cmd.Context(), method, "/api/v1/tasks/"+url.PathEscape(args[0])+suffix, nil, &t); err != nil {
				return fmt.Errorf("%s task %s: %w", name, args[0], err)
			}
			return printTasks(cmd.OutOrStdout(), o.output, t)
		},
	}
}

func printTasks(w io.Writer, output string, tasks ...store.Task) error {
	if structured(output) {
		if len(tasks) == 1 {
			return printData(w, output, tasks[0])
		}
		return printData(w, output, tasks)
	}
	if output == "name" {
		names := make([]string, 0, len(tasks))
		for _, t := range tasks {
			names = append(names, t.ID)
		}
		return printNames(w, names)
	}
	if output == "wide" {
		return printTasksWide(w, tasks)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMAC\tREGION\tOS\tHOSTNAME\tSTATUS\tPROGRESS\tCREATED")
	for _, t := range tasks {
		prog := "-"
		if p := t.Progress; p != nil {
			prog = fmt.Sprintf("%d%% %s", p.Percentage, p.Stage)
		}
		host := t.Spec.Hostname
		if host == "" {
			host = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%s\t%s\t%s\n", t.ID, t.Spec.TargetMAC, t.Spec.RegionID,
			t.Spec.OSType, t.Spec.OSVersion, host, t.Status.Status, prog, t.Spec.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}
