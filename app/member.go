package app

import (
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
)

func newMemberCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List and remove cluster members",
	}
	o.addFlags(cmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "Show the members, their role (voter/learner), the leader, health and regions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var st store.ClusterStatus
			if err := c.do(cmd.Context(), "GET", "/api/v1/cluster/members", nil, &st); err != nil {
				return fmt.Errorf("list members: %w", err)
			}
			return printMembers(cmd.OutOrStdout(), o.output, st) // app/output_lists.go
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME|ID",
		Short: "Remove a member; it stops and its data dir is tombstoned",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var m store.Member
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/cluster/members/"+url.PathEscape(args[0]), nil, &m); err != nil {
				return fmt.Errorf("remove member: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed member %s (%s); if it runs it stops and tombstones its data dir\n", m.Name, m.ID)
			return nil
		},
	}
	cmd.AddCommand(list, remove)
	return cmd
}

func newLeaveCmd() *cobra.Command {
	o := &clientOptions{}
	var name string
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Remove this box's member from the cluster and tombstone its data dir",
		Long: `Remove the member whose data dir is --data-dir from its cluster (through the
control plane at --server: this box's own, or any member's) and mark the data
dir so it cannot start again by accident. A running 'lpmos serve' on it stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				m, err := readMemberFile(o.dataDir)
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						return fmt.Errorf("%s holds no member (no member.json): pass --data-dir of the member, or --name", o.dataDir)
					}
					return err
				}
				name = m.Name
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			var m store.Member
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/cluster/members/"+url.PathEscape(name), nil, &m); err != nil {
				return fmt.Errorf("leave: %w", err)
			}
			if _, err := os.Stat(o.dataDir); err == nil {
				if err := store.Tombstone(o.dataDir); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "member %s (%s) left the cluster; %s is tombstoned (a running lpmos on it stops)\n", m.Name, m.ID, o.dataDir)
			return nil
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&name, "name", "", "member name (default: from <data-dir>/member.json)")
	return cmd
}
