package app

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lpmos/lpmos/store"
)

// The printers of the lists that have no printer of their own elsewhere
// (tasks: task.go and cli_extra.go; machines: machine.go; images:
// image.go), each honouring every -o format: table, wide (the table with
// the columns that do not fit a terminal), json, yaml and name.

// tableWriter is the tabwriter every list prints through.
func tableWriter(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// row writes the cells of one table line; wide cells only with -o wide.
func row(tw io.Writer, output string, cells []string, wide ...string) {
	if output == "wide" {
		cells = append(cells, wide...)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func flush(tw *tabwriter.Writer) error {
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// printRegions is `lpmos region list`; wide adds the region's services
// and their state.
func printRegions(w io.Writer, output string, rs []store.Region) error {
	switch {
	case structured(output):
		return printData(w, output, rs)
	case output == "name":
		names := make([]string, 0, len(rs))
		for _, r := range rs {
			names = append(names, r.ID)
		}
		return printNames(w, names)
	}
	tw := tableWriter(w)
	row(tw, output, []string{"ID", "MEMBER", "AGENT API", "STARTED"}, "UP FOR", "SERVICES")
	for _, r := range rs {
		var svcs []string
		for _, name := range slices.Sorted(maps.Keys(r.Services)) {
			svcs = append(svcs, name+"="+r.Services[name])
		}
		up := "-"
		if !r.StartedAt.IsZero() {
			up = time.Since(r.StartedAt).Round(time.Second).String()
		}
		row(tw, output, []string{r.ID, dash(r.Member), dash(r.APIURL), localTime(r.StartedAt)}, up, dash(strings.Join(svcs, ",")))
	}
	return flush(tw)
}

// printJoinTokens is `lpmos token list`; wide adds when each token was
// created and revoked.
func printJoinTokens(w io.Writer, output string, toks []store.JoinTokenInfo) error {
	switch {
	case structured(output):
		return printData(w, output, toks)
	case output == "name":
		names := make([]string, 0, len(toks))
		for _, t := range toks {
			names = append(names, t.ID)
		}
		return printNames(w, names)
	}
	tw := tableWriter(w)
	row(tw, output, []string{"ID", "USE", "EXPIRES", "USED BY", "STATE"}, "CREATED", "REVOKED")
	for _, t := range toks {
		use := "reusable"
		if t.SingleUse {
			use = "single-use"
		}
		used := "-"
		if t.Used {
			used = dash(t.UsedBy)
		}
		exp := localTime(t.ExpiresAt)
		if d := time.Until(t.ExpiresAt); d > 0 {
			exp += " (in " + d.Round(time.Second).String() + ")"
		}
		row(tw, output, []string{t.ID, use, exp, used, t.State}, localTime(t.CreatedAt), localTime(t.RevokedAt))
	}
	return flush(tw)
}

// printOperatorTokens is `lpmos token operator list`; wide adds what each
// kind may do and the token's age.
func printOperatorTokens(w io.Writer, output string, ops []store.OperatorToken) error {
	switch {
	case structured(output):
		return printData(w, output, ops)
	case output == "name":
		names := make([]string, 0, len(ops))
		for _, op := range ops {
			names = append(names, op.Name)
		}
		return printNames(w, names)
	}
	tw := tableWriter(w)
	row(tw, output, []string{"NAME", "KIND", "CREATED"}, "AGE", "MAY")
	for _, op := range ops {
		may := "read and write (every API call)"
		if op.Kind == store.OperatorReadOnly {
			may = "read (GET only)"
		}
		row(tw, output, []string{op.Name, op.Kind, localTime(op.CreatedAt)}, time.Since(op.CreatedAt).Round(time.Second).String(), may)
	}
	return flush(tw)
}

// printMembers is `lpmos member list`; wide adds which member answered
// and each member's raft index. json and yaml print the whole status
// (cluster id, leader, fault tolerance and the members).
func printMembers(w io.Writer, output string, st store.ClusterStatus) error {
	switch {
	case structured(output):
		return printData(w, output, st)
	case output == "name":
		names := make([]string, 0, len(st.Members))
		for _, m := range st.Members {
			names = append(names, m.Name)
		}
		return printNames(w, names)
	}
	tw := tableWriter(w)
	row(tw, output, []string{"NAME", "ID", "ROLE", "LEADER", "HEALTH", "PEER URL", "CLIENT URL", "REGIONS"}, "ANSWERED", "RAFT INDEX")
	for _, m := range st.Members {
		name, lead, h, self, idx := m.Name, "", "healthy", "", "-"
		if name == "" {
			name = "(not started)"
		}
		if m.Leader {
			lead = "*"
		}
		if !m.Healthy {
			h = "unhealthy: " + m.Error
		}
		if m.Self {
			self = "*"
		}
		if m.RaftIndex > 0 {
			idx = fmt.Sprint(m.RaftIndex)
		}
		row(tw, output, []string{name, m.ID, m.Role(), lead, h, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), strings.Join(m.Regions, ",")}, self, idx)
	}
	if err := flush(tw); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d voting member(s), tolerates %d failure(s)\n", st.Voters, st.FaultTolerance)
	return err
}
