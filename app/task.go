package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	)
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
			if o.output == "json" { // always a list, even of one task
				return printJSON(cmd.OutOrStdout(), list.Tasks)
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
			if o.output == "json" {
				return printJSON(w, d)
			}
			if err := printTasks(w, "table", d.Task); err != nil {
				return err
			}
			if d.Status.Reason != "" {
				fmt.Fprintf(w, "\nreason: %s\n", d.Status.Reason)
			}
			if hw := d.Hardware; hw != nil {
				fmt.Fprintf(w, "\nhardware: %s %s, %d threads, %d GB, %d disks, %d NICs, %s boot\n",
					hw.DMI.Vendor, hw.DMI.Product, hw.CPU.Threads, hw.Memory.TotalGB, len(hw.Disks), len(hw.NICs), hw.BootMode)
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

func newTaskWatchCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a task live until it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			req, err := http.NewRequestWithContext(cmd.Context(), "GET", c.base+"/api/v1/tasks/"+url.PathEscape(args[0])+"/watch", nil)
			if err != nil {
				return fmt.Errorf("build request: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+c.token)
			resp, err := c.http.Do(req)
			if err != nil {
				return fmt.Errorf("watch task: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				var e struct{ Error string }
				_ = json.NewDecoder(resp.Body).Decode(&e)
				return fmt.Errorf("watch task: %w", &APIError{Status: resp.StatusCode, Message: e.Error})
			}
			return printWatch(cmd.OutOrStdout(), o.output, resp.Body)
		},
	}
}

func printWatch(w io.Writer, output string, body io.Reader) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		if output == "json" {
			fmt.Fprintln(w, sc.Text())
			continue
		}
		var l ui.WatchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("decode watch line: %w", err)
		}
		now := time.Now().Format(time.TimeOnly)
		switch {
		case l.Task != nil:
			fmt.Fprintf(w, "%s  task %s is %s\n", now, l.TaskID, l.Task.Status.Status)
		case l.Status != nil:
			fmt.Fprintf(w, "%s  status %s %s\n", now, l.Status.Status, l.Status.Reason)
		case l.Progress != nil:
			fmt.Fprintf(w, "%s  [%3d%%] %s: %s\n", now, l.Progress.Percentage, l.Progress.Stage, l.Progress.Message)
		case l.Hardware != nil:
			fmt.Fprintf(w, "%s  hardware reported: %s %s\n", now, l.Hardware.DMI.Vendor, l.Hardware.DMI.Product)
		case l.Power != nil:
			fmt.Fprintf(w, "%s  power %s %s\n", now, l.Power.State, l.Power.Error)
		case l.Event != nil && l.Event.Kind == store.EventKindPower:
			fmt.Fprintf(w, "%s  power: %s\n", now, l.Event.Message)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch stream: %w", err)
	}
	return nil
}

func printTasks(w io.Writer, output string, tasks ...store.Task) error {
	if output == "json" {
		if len(tasks) == 1 {
			return printJSON(w, tasks[0])
		}
		return printJSON(w, tasks)
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
