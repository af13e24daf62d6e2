package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

// Exit codes of `lpmos task watch` (0: the task completed; 1: any other
// error, e.g. an unknown task or a refused token).
const (
	exitTaskFailed    = 2
	exitTaskCancelled = 3
	exitWatchLost     = 4
)

// codedError is an error that sets the process exit code (app.Main).
type codedError struct {
	code int
	msg  string
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) ExitCode() int { return e.code }

func newTaskWatchCmd(o *clientOptions) *cobra.Command {
	var reconnect time.Duration
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a task live until it ends (exit 0 completed, 2 failed, 3 cancelled, 4 connection lost)",
		Long: `Follow a task live until it ends. The exit code says how it ended:
0 completed, 2 failed, 3 cancelled, 4 the connection to the control plane
was lost for longer than --reconnect-timeout (1 for any other error). A task
that has already ended prints its status and exits at once. When the
connection drops (e.g. serve restarts) watch reconnects and carries on.`,
		Example: "  lpmos task watch 01J9Z... && echo installed",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return watchTask(cmd.Context(), c, args[0], o.output, reconnect, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().DurationVar(&reconnect, "reconnect-timeout", time.Minute, "how long to keep reconnecting after the connection to the control plane is lost (0: give up at once)")
	return cmd
}

// watchState is what the watch knows about the task so far.
type watchState struct {
	status store.Status
	reason string
}

// watchTask follows the task over as many connections as it takes and
// returns nil when it completed, a codedError otherwise.
func watchTask(ctx context.Context, c *apiClient, id, output string, reconnect time.Duration, out, errOut io.Writer) error {
	var st watchState
	var lostAt time.Time
	for {
		connected, err := watchOnce(ctx, c, id, output, &st, out)
		if !st.status.Active() && st.status != "" {
			return watchEnded(id, st)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Status < 500 {
			return fmt.Errorf("watch task %s: %w", id, err) // unknown task, bad token: no retry helps
		}
		if err != nil && connectHint(err) != connectHint(errors.New("")) {
			return fmt.Errorf("watch task %s: %w (%s)", id, err, connectHint(err)) // TLS trust: no retry helps
		}
		if err == nil {
			err = errors.New("the server ended the stream")
		}
		if connected || lostAt.IsZero() {
			lostAt = time.Now()
			fmt.Fprintf(errOut, "lpmos: connection to %s lost (%v); reconnecting for up to %s\n", c.base, err, reconnect)
		}
		if time.Since(lostAt) >= reconnect {
			last := "unknown"
			if st.status != "" {
				last = string(st.status)
			}
			return &codedError{code: exitWatchLost, msg: fmt.Sprintf("connection lost: could not reach %s for %s (%v); task %s was last seen %s, its outcome is unknown",
				c.base, reconnect, err, id, last)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// watchEnded turns the task's terminal status into the command's result.
func watchEnded(id string, st watchState) error {
	reason := ""
	if st.reason != "" {
		reason = ": " + st.reason
	}
	switch st.status {
	case wire.StatusCompleted:
		return nil
	case wire.StatusCancelled:
		return &codedError{code: exitTaskCancelled, msg: fmt.Sprintf("task %s was cancelled%s", id, reason)}
	}
	return &codedError{code: exitTaskFailed, msg: fmt.Sprintf("task %s %s%s", id, st.status, reason)}
}

// watchOnce reads one /watch stream into st, printing each line; connected
// says whether the server answered the stream at all.
func watchOnce(ctx context.Context, c *apiClient, id, output string, st *watchState, w io.Writer) (connected bool, err error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/api/v1/tasks/"+url.PathEscape(id)+"/watch", nil)
	if err != nil {
		return false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return false, &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	return true, printWatch(w, output, resp.Body, st)
}

func printWatch(w io.Writer, output string, body io.Reader, st *watchState) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var l ui.WatchLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("decode watch line: %w", err)
		}
		switch {
		case l.Task != nil:
			st.status, st.reason = l.Task.Status.Status, l.Task.Status.Reason
		case l.Status != nil:
			st.status, st.reason = l.Status.Status, l.Status.Reason
		}
		if output == "json" {
			fmt.Fprintln(w, sc.Text())
			continue
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
