package app

import (
	"fmt"
	"io"
	"net/url"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

const rootDeviceHelp = `root-device hints: the disk to erase, as key=value pairs separated by commas:
name (sda or /dev/sda), serial, wwn, model, vendor, by-path (exact, case-insensitive),
min-size / max-size (bytes, or with a unit: 100G = 100 GB, 512GiB, 1.5T), rotational (true/false);
e.g. --root-device name=nvme0n1 or --root-device model=INTEL SSDSC2KB240G8,min-size=200G.
Without it: the smallest fixed disk that holds the image`

func addRootDeviceFlag(f *pflag.FlagSet) {
	f.String("root-device", "", rootDeviceHelp)
}

// rootDeviceFlag parses --root-device into req (before anything is sent).
func rootDeviceFlag(cmd *cobra.Command, req *ui.CreateTaskRequest) error {
	v, _ := cmd.Flags().GetString("root-device")
	if v == "" {
		return nil
	}
	h, err := disksel.ParseHints(v)
	if err != nil {
		return fmt.Errorf("--root-device: %w", err)
	}
	req.RootDeviceHints = &h
	return nil
}

func newTaskApproveCmd(o *clientOptions) *cobra.Command {
	var body ui.ApproveRequest
	cmd := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve the install of a task waiting for approval",
		Long: `Approve the install of a task waiting for approval. The disk it erases is the one
lpmos chose from the hardware report (lpmos task get ID shows it); --disk names
another one of the reported disks instead (kernel name, serial, wwn or by-path).`,
		Example: "  lpmos task approve 0b6c... --disk nvme0n1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var req any
			if body.Disk != "" {
				req = body
			}
			var t store.Task
			if err := c.do(cmd.Context(), "PUT", "/api/v1/tasks/"+url.PathEscape(args[0])+"/approve", req, &t); err != nil {
				return fmt.Errorf("approve task %s: %w", args[0], err)
			}
			if err := printTasks(cmd.OutOrStdout(), o.output, t); err != nil {
				return err
			}
			if !structured(o.output) && o.output != "name" {
				printTargetDisk(cmd.OutOrStdout(), t)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&body.Disk, "disk", "", "erase this disk instead of the one lpmos chose: its name (nvme0n1, /dev/sdb), serial, wwn or by-path name")
	return cmd
}

// printTargetDisk says which disk the install erases (or erased).
func printTargetDisk(w io.Writer, t store.Task) {
	if h := t.Spec.RootDeviceHints; h != nil {
		fmt.Fprintf(w, "\nroot device hints: %s\n", disksel.String(*h))
	}
	if td := t.TargetDisk; td != nil {
		fmt.Fprintf(w, "\ntarget disk (chosen by %s): %s\n", td.ChosenBy, td.Description)
	}
}
