package app

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

// Shell completion of values that live on the server (task ids, MACs,
// regions, images): asked with the same --server/--token/--data-dir (and
// LPMOS_*) as the command, within 3 seconds; nothing is offered when the
// server does not answer.

const completeTimeout = 3 * time.Second

type completeFunc = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)

// completionClient is o.client() for a completion request, where cobra
// has parsed the flags but not run PersistentPreRunE (the environment).
func completionClient(cmd *cobra.Command, o *clientOptions) (*apiClient, context.Context, context.CancelFunc, bool) {
	_ = applyEnv(cmd.Flags())
	c, err := o.client()
	if err != nil {
		return nil, nil, nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	return c, ctx, cancel, true
}

// completeTaskIDs offers the ids of tasks (in one of statuses, or any),
// each described by MAC, hostname and status.
func completeTaskIDs(o *clientOptions, statuses ...string) completeFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		c, ctx, cancel, ok := completionClient(cmd, o)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		var list ui.TaskList
		if err := c.do(ctx, "GET", "/api/v1/tasks", nil, &list); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, t := range list.Tasks {
			if len(statuses) > 0 && !slices.Contains(statuses, string(t.Status.Status)) {
				continue
			}
			if !strings.HasPrefix(t.ID, toComplete) || slices.Contains(args, t.ID) {
				continue
			}
			out = append(out, fmt.Sprintf("%s\t%s %s %s", t.ID, t.Spec.TargetMAC, dash(t.Spec.Hostname), t.Status.Status))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeMACs offers the MACs of tasks and discovered machines.
func completeMACs(o *clientOptions) completeFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		c, ctx, cancel, ok := completionClient(cmd, o)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		seen := discoveredMACs(ctx, c)
		var list ui.TaskList
		if c.do(ctx, "GET", "/api/v1/tasks", nil, &list) == nil {
			for _, t := range list.Tasks {
				if _, ok := seen[t.Spec.TargetMAC]; !ok {
					seen[t.Spec.TargetMAC] = fmt.Sprintf("task %s %s", t.Status.Status, dash(t.Spec.Hostname))
				}
			}
		}
		return described(seen, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeMachineMACs offers the MACs of discovered machines only.
func completeMachineMACs(o *clientOptions) completeFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, ctx, cancel, ok := completionClient(cmd, o)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		seen := discoveredMACs(ctx, c)
		return described(seen, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeRegions offers the live regions.
func completeRegions(o *clientOptions) completeFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		c, ctx, cancel, ok := completionClient(cmd, o)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		seen := map[string]string{}
		var rs []store.Region
		if c.do(ctx, "GET", "/api/v1/regions", nil, &rs) == nil {
			for _, r := range rs {
				seen[r.ID] = "member " + dash(r.Member)
			}
		}
		return described(seen, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeImages offers the OS types (for --os) or, with versions, the
// versions of the --os given so far (for --os-version).
func completeImages(o *clientOptions, versions bool) completeFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		c, ctx, cancel, ok := completionClient(cmd, o)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		osType, _ := cmd.Flags().GetString("os")
		seen := map[string]string{}
		var imgs []store.Image
		if c.do(ctx, "GET", "/api/v1/images", nil, &imgs) == nil {
			for _, i := range imgs {
				switch {
				case !versions:
					seen[i.OSType] = "image"
				case osType == "" || osType == i.OSType:
					seen[i.OSVersion] = i.OSType + " " + i.Format
				}
			}
		}
		return described(seen, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeStatuses offers the task statuses.
func completeStatuses(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, s := range wire.AllStatuses {
		if strings.HasPrefix(string(s), toComplete) {
			out = append(out, string(s))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeOutput offers the -o formats.
func completeOutput(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, f := range outputFormats {
		if strings.HasPrefix(f, toComplete) {
			out = append(out, f)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// described renders value -> description as cobra's "value\tdescription",
// sorted, keeping those that start with prefix.
func described(m map[string]string, prefix string) []string {
	var out []string
	for v, d := range m {
		if strings.HasPrefix(v, prefix) {
			out = append(out, v+"\t"+d)
		}
	}
	slices.Sort(out)
	return out
}

// addTaskCompletions wires the task commands' completions: ids for the
// commands that take one, and the flags' values.
func addTaskCompletions(task *cobra.Command, o *clientOptions) {
	for _, c := range task.Commands() {
		switch c.Name() {
		case "get", "approve", "cancel", "retry", "watch":
			if c.ValidArgsFunction == nil {
				c.ValidArgsFunction = onlyFirst(completeTaskIDs(o))
			}
		case "list":
			_ = c.RegisterFlagCompletionFunc("status", completeStatuses)
			_ = c.RegisterFlagCompletionFunc("region", completeRegions(o))
			_ = c.RegisterFlagCompletionFunc("mac", completeMACs(o))
		case "create":
			_ = c.RegisterFlagCompletionFunc("region", completeRegions(o))
			_ = c.RegisterFlagCompletionFunc("mac", completeMACs(o))
			_ = c.RegisterFlagCompletionFunc("os", completeImages(o, false))
			_ = c.RegisterFlagCompletionFunc("os-version", completeImages(o, true))
		}
	}
}

// onlyFirst completes the first argument only (commands that take one id).
func onlyFirst(f completeFunc) completeFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// discoveredMACs maps each discovered machine's MAC to a description
// (empty when the server does not answer: completion offers less).
func discoveredMACs(ctx context.Context, c *apiClient) map[string]string {
	seen := map[string]string{}
	var ms []store.Machine
	if c.do(ctx, "GET", "/api/v1/machines", nil, &ms) == nil {
		for _, m := range ms {
			seen[m.MAC] = "discovered in " + m.RegionID
		}
	}
	return seen
}
