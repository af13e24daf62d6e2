// Package runner is the agent's flow: report the hardware, wait for the
// operator's approval, install, report completion. It is separate from
// main so the whole flow runs in tests against a fake agent API.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/logring"
	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
)

// Runner runs one provisioning pass.
type Runner struct {
	API      *client.Client
	Log      *slog.Logger
	Ring     *logring.Ring                 // last log lines for failure reports; may be nil
	Hardware func() (wire.Hardware, error) // hardware collection (hw.Collect bound to a root)

	// HasToken says the agent holds a per-task token. Without one (a machine
	// booted for discovery), a 401 on the approval poll means an operator
	// has created its task: the token comes with the next PXE boot.
	HasToken bool

	MAC    string // boot NIC; empty = the first NIC with a link
	TaskID string // from the kernel line; the approval answer names it otherwise
	Disk   string // target; empty = demo, unless AutoDisk
	// AutoDisk picks the smallest fixed disk that fits the image when Disk is
	// empty (PID-1 mode: the machine is being provisioned, not demoed).
	AutoDisk bool

	ImageClient  *http.Client  // for the image download; default plain
	ApprovalWait time.Duration // long-poll duration; default 30s
	Backoff      retry.Backoff // between approval polls that fail or return early
	Install      install.Options
}

// StopError means the server said to stop (task cancelled, failed, or
// already completed): nothing to report back.
type StopError struct {
	TaskID string
	Status wire.Status
	Reason string
}

func (e *StopError) Error() string {
	s := fmt.Sprintf("task %s is %s", e.TaskID, e.Status)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// NeedTokenError means a task now exists for this discovered machine and
// the server wants its token: boot again (iPXE puts it on the kernel line).
type NeedTokenError struct{ Err error }

func (e *NeedTokenError) Error() string {
	return "a task now exists for this machine; it needs its agent token (boot again): " + e.Err.Error()
}
func (e *NeedTokenError) Unwrap() error { return e.Err }

// Run executes the flow and returns nil only when the install (or the demo)
// completed and the completion was reported.
func (r *Runner) Run(ctx context.Context) error {
	hw, err := r.Hardware()
	if err != nil {
		// Partial hardware is still worth reporting: the operator decides.
		r.Log.Warn("some hardware details could not be read", "error", err)
	}
	mac := r.MAC
	if mac == "" {
		if mac = BootMAC(hw.NICs); mac == "" {
			return errors.New("no network interface with a MAC address: cannot identify this machine")
		}
		r.Log.Info("identifying as the first NIC with a link", "mac", mac)
	}
	hwResp, err := r.API.ReportHardware(ctx, wire.HardwareReport{MACAddress: mac, TaskID: r.TaskID, Hardware: hw})
	if err != nil && !r.HasToken && client.IsAuth(err) {
		return &NeedTokenError{Err: err}
	}
	if err != nil {
		return fmt.Errorf("reporting hardware: %w", err)
	}
	taskID := r.TaskID
	if hwResp.TaskID != "" {
		taskID = hwResp.TaskID
	}
	r.Log.Info("hardware reported", "mac", mac, "task", taskID, "status", hwResp.Status, "discovered", hwResp.Discovered)

	approval, err := r.waitApproval(ctx, mac)
	if err != nil {
		return err
	}
	taskID = approval.TaskID
	spec := *approval.Install
	r.Log.Info("install approved", "task", taskID, "os", spec.OSType+" "+spec.OSVersion, "image", spec.ImageURL, "size", spec.ImageSize)

	disk := r.Disk
	if disk == "" && r.AutoDisk {
		if disk, err = ChooseDisk(hw.Disks, spec.ImageSize); err != nil {
			return r.fail(ctx, mac, taskID, err)
		}
		r.Log.Info("target disk chosen", "disk", disk)
	}

	rep := &reporter{api: r.API, mac: mac, taskID: taskID}
	opts := r.Install
	opts.Disk, opts.TaskID, opts.Report, opts.Logger = disk, taskID, rep.report, r.Log
	if opts.HTTPClient == nil {
		opts.HTTPClient = r.ImageClient
	}
	if err := install.Install(ctx, spec, opts); err != nil {
		return r.fail(ctx, mac, taskID, fmt.Errorf("install: %w", err))
	}
	msg := "installation complete"
	if disk == "" {
		msg = "demo complete: nothing was written to any disk"
	}
	if err := rep.report(ctx, install.Progress{Stage: wire.StageCompleted, Percentage: 100, Message: msg}); err != nil {
		return fmt.Errorf("reporting completion: %w", err)
	}
	r.Log.Info(msg, "task", taskID)
	return nil
}

// waitApproval long-polls until the task is approved with an install spec.
func (r *Runner) waitApproval(ctx context.Context, mac string) (wire.ApprovalResponse, error) {
	wait := r.ApprovalWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	var lastStatus wire.Status = "-"
	for attempt := 0; ; {
		start := time.Now()
		a, err := r.API.Approval(ctx, mac, wait)
		switch {
		case client.IsNotFound(err):
			if lastStatus != "" {
				r.Log.Info("no task for this machine yet; waiting for an operator to create one", "mac", mac)
				lastStatus = ""
			}
		case err != nil && !r.HasToken && client.IsAuth(err):
			return a, &NeedTokenError{Err: err}
		case err != nil:
			return a, fmt.Errorf("waiting for approval: %w", err)
		case a.Status == wire.StatusCancelled, a.Status == wire.StatusFailed, a.Status == wire.StatusCompleted:
			return a, &StopError{TaskID: a.TaskID, Status: a.Status, Reason: a.Reason}
		case a.Approved && a.Install != nil:
			return a, nil
		case a.Approved:
			r.Log.Warn("approved but the server sent no install spec; asking again", "task", a.TaskID)
		default:
			if a.Status != lastStatus {
				r.Log.Info("waiting for approval", "task", a.TaskID, "status", a.Status)
				lastStatus = a.Status
			}
			if time.Since(start) >= wait/2 {
				attempt = 0 // a real long-poll: ask again at once
				continue
			}
		}
		// An early answer (404, an older server without long-poll): back off
		// so the agent does not spin.
		if err := retry.Sleep(ctx, r.Backoff.Delay(attempt)); err != nil {
			return a, fmt.Errorf("waiting for approval: %w", err)
		}
		attempt++
	}
}

// fail reports a failure with the last log lines, then returns cause.
func (r *Runner) fail(ctx context.Context, mac, taskID string, cause error) error {
	r.Log.Error("install failed", "task", taskID, "error", cause)
	if client.IsAuth(cause) {
		return cause // the server already refuses this token
	}
	var lines []string
	if r.Ring != nil {
		lines = r.Ring.Lines()
	}
	// Report even when ctx was cancelled (SIGTERM): the operator should
	// learn why the machine stopped.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := r.API.ReportFailure(rctx, wire.FailureReport{MACAddress: mac, TaskID: taskID, Reason: cause.Error(), LogLines: lines}); err != nil {
		r.Log.Error("could not report the failure", "error", err)
		return errors.Join(cause, fmt.Errorf("reporting failure: %w", err))
	}
	return cause
}

// reporter turns install progress into wire.Progress with an increasing
// Seq. Seq follows the clock (microseconds), not a counter from 1: a machine
// that reboots mid-install starts a new agent, whose reports must still
// sort after the ones the server already holds for this attempt.
type reporter struct {
	api    *client.Client
	mac    string
	taskID string
	mu     sync.Mutex
	seq    int64
}

func (p *reporter) report(ctx context.Context, pr install.Progress) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq = max(p.seq+1, time.Now().UnixMicro())
	_, err := p.api.ReportProgress(ctx, wire.Progress{
		MACAddress: p.mac, TaskID: p.taskID, Seq: p.seq, Stage: pr.Stage, Percentage: pr.Percentage,
		Message: pr.Message, BytesDone: pr.BytesDone, BytesTotal: pr.BytesTotal,
		Partitions: pr.Partitions,
	})
	if client.IsConflict(err) {
		return fmt.Errorf("the server refused progress (task cancelled or taken over?): %w", err)
	}
	return err
}

// BootMAC is the MAC of the first NIC (by name) with a link, else of the
// first NIC: without a kernel-line MAC the NIC we booted from is the best
// guess, and it has a link.
func BootMAC(nics []wire.NIC) string {
	sorted := append([]wire.NIC(nil), nics...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, n := range sorted {
		if n.Link && n.MAC != "" {
			return n.MAC
		}
	}
	for _, n := range sorted {
		if n.MAC != "" {
			return n.MAC
		}
	}
	return ""
}

// ChooseDisk picks the smallest fixed (non-removable) disk that holds the
// image, as Ironic does by default: the boot USB stick and the big data
// disks stay untouched.
func ChooseDisk(disks []wire.Disk, need int64) (string, error) {
	best := -1
	for i, d := range disks {
		if d.Removable || d.SizeBytes < uint64(max(need, 1)) {
			continue
		}
		if best < 0 || d.SizeBytes < disks[best].SizeBytes {
			best = i
		}
	}
	if best < 0 {
		return "", fmt.Errorf("no fixed disk of at least %d bytes among %d disks", need, len(disks))
	}
	return "/dev/" + disks[best].Name, nil
}
