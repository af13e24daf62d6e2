// Package runner is the agent's flow: exchange the boot token for a
// session, report the hardware, wait for the operator's approval, install,
// report completion. A machine booted for discovery gets a discovery
// session and waits until a task is handed over to it; with
// StayAfterFailure, an agent whose install failed keeps its session and
// picks up a retry without a reboot. It is separate from main so the whole
// flow runs in tests against a fake or real agent API.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/disksel"
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

	// BootToken is lpmos_token from the kernel line: exchanged, once, for
	// the task's session. Empty: the machine booted for discovery.
	BootToken string
	// StayAfterFailure keeps the agent running when its install fails or
	// its task fails or is cancelled: it keeps its session and polls, and a
	// retry of the task is picked up without a reboot (PID-1 mode).
	StayAfterFailure bool

	MAC    string // boot NIC; empty = the first NIC with a link
	TaskID string // from the kernel line; the approval answer names it otherwise
	Disk   string // target (lpmos_disk=, --disk); wins over the server's choice; empty = demo, unless AutoDisk
	// AutoDisk writes the disk the server chose (InstallSpec.TargetDisk),
	// after checking it is still the same disk, when Disk is empty (PID-1
	// mode: the machine is being provisioned, not demoed). An older server
	// sends no target: the smallest fixed disk that fits the image is used.
	AutoDisk bool
	DevDir   string // where the disks' device nodes are; default /dev (tests: a directory of files)

	// PowerManaged is set by Run when the completed install's task said
	// the region reboots the machine through its BMC (the agent then
	// does not reboot by itself).
	PowerManaged bool

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

// BootAgainError means the server refuses this agent's credentials in a
// way only a new PXE boot (with a new boot token in its script) fixes: the
// boot token was already used or expired, the session was revoked by a
// newer one, or a task now exists for a machine reporting without one.
type BootAgainError struct{ Err error }

func (e *BootAgainError) Error() string {
	return "boot again for a new boot token: " + e.Err.Error()
}
func (e *BootAgainError) Unwrap() error { return e.Err }

// handOver is the approval poll handing this agent a task and a session
// (a discovered machine's new task, or a retry of its ended task).
type handOver struct{ taskID, token string }

func (h *handOver) Error() string { return "task " + h.taskID + " handed over" }

// errRediscover: the discovery session was replaced (a newer report for
// this MAC); report again for a new one.
var errRediscover = errors.New("discovery session replaced")

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
	taskID := r.TaskID
	if r.BootToken != "" {
		s, err := r.API.Session(ctx, r.BootToken, wire.SessionRequest{MACAddress: mac, TaskID: r.TaskID})
		if client.IsAuth(err) {
			return &BootAgainError{Err: fmt.Errorf("exchanging the boot token: %w", err)}
		}
		if err != nil {
			return fmt.Errorf("exchanging the boot token: %w", err)
		}
		r.API.SetToken(s.SessionToken)
		taskID = s.TaskID
		r.Log.Info("agent session opened", "task", taskID, "status", s.Status)
	}
	report, rediscovered := true, 0
	for {
		if report {
			if err := r.reportHardware(ctx, mac, taskID, hw); err != nil {
				return err
			}
			report = false
		}
		approval, err := r.waitApproval(ctx, mac, taskID == "")
		var ho *handOver
		switch {
		case errors.As(err, &ho):
			r.API.SetToken(ho.token)
			taskID, report = ho.taskID, true
			r.Log.Info("task handed over to this agent", "task", taskID)
			continue
		case errors.Is(err, errRediscover):
			if err := retry.Sleep(ctx, r.Backoff.Delay(rediscovered)); err != nil {
				return fmt.Errorf("waiting for a task: %w", err)
			}
			rediscovered++
			report = true
			continue
		case err != nil:
			return err
		}
		taskID = approval.TaskID
		err = r.install(ctx, mac, taskID, hw, *approval.Install)
		if client.IsAuth(err) {
			return &BootAgainError{Err: err}
		}
		var failed *installFailed
		if err == nil || !errors.As(err, &failed) || !r.StayAfterFailure || ctx.Err() != nil || client.IsAuth(err) {
			return err
		}
		r.Log.Warn("install failed; staying up: a retry of the task is picked up without a reboot", "task", taskID)
	}
}

// reportHardware reports with the task session, or (no task) as a
// discovered machine, taking the discovery session from the answer.
func (r *Runner) reportHardware(ctx context.Context, mac, taskID string, hw wire.Hardware) error {
	if taskID == "" {
		r.API.SetToken("")
	}
	resp, err := r.API.ReportHardware(ctx, wire.HardwareReport{MACAddress: mac, TaskID: taskID, Hardware: hw})
	if client.IsAuth(err) {
		return &BootAgainError{Err: fmt.Errorf("reporting hardware: %w", err)}
	}
	if err != nil {
		return fmt.Errorf("reporting hardware: %w", err)
	}
	if taskID == "" {
		if resp.SessionToken == "" {
			return errors.New("reporting hardware: the server gave this discovered machine no session")
		}
		r.API.SetToken(resp.SessionToken)
	}
	r.Log.Info("hardware reported", "mac", mac, "task", taskID, "status", resp.Status, "discovered", resp.Discovered)
	switch resp.Status {
	case wire.StatusFailed, wire.StatusCancelled, wire.StatusCompleted:
		// E.g. no disk matches the task's root-device hints: the server
		// failed the task at once, before anything was written. An agent
		// that stays up waits for a retry or a new task for its MAC.
		if !r.StayAfterFailure || resp.Status == wire.StatusCompleted {
			return &StopError{TaskID: taskID, Status: resp.Status, Reason: resp.Reason}
		}
		r.Log.Warn("the server ended the task on this hardware report; staying up for a retry or a new task", "task", taskID, "status", resp.Status, "reason", resp.Reason)
	}
	return nil
}

// installFailed marks an install failure that was reported to the server.
type installFailed struct{ err error }

func (e *installFailed) Error() string { return e.err.Error() }
func (e *installFailed) Unwrap() error { return e.err }

// install writes the approved image and reports completion.
func (r *Runner) install(ctx context.Context, mac, taskID string, hw wire.Hardware, spec wire.InstallSpec) error {
	r.Log.Info("install approved", "task", taskID, "os", spec.OSType+" "+spec.OSVersion, "image", spec.ImageURL, "size", spec.ImageSize)
	disk := r.Disk
	var err error
	switch {
	case disk != "" && spec.TargetDisk != nil:
		r.Log.Warn("writing the disk given on the command line, not the one the server chose", "disk", disk, "server_choice", disksel.Describe(*spec.TargetDisk))
	case disk == "" && r.AutoDisk:
		if disk, err = r.targetDisk(spec); err != nil {
			return r.fail(ctx, mac, taskID, err)
		}
	}

	rep := &reporter{api: r.API, mac: mac, taskID: taskID}
	opts := r.Install
	opts.Disk, opts.TaskID, opts.Report, opts.Logger = disk, taskID, rep.report, r.Log
	opts.NextInterval = rep.nextInterval
	if opts.HTTPClient == nil {
		opts.HTTPClient = r.ImageClient
	}
	// The region serves images only to the session of the approved task.
	hc := http.Client{}
	if opts.HTTPClient != nil {
		hc = *opts.HTTPClient
	}
	hc.Transport = r.API.AuthTransport(hc.Transport)
	opts.HTTPClient = &hc
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
	r.PowerManaged = spec.PowerManaged
	return nil
}

// waitApproval long-polls until the task is approved with an install
// spec. A discovered machine (discovery) waits for a task to be handed
// over; a session's task that failed or was cancelled is waited on for a
// retry when StayAfterFailure is set.
func (r *Runner) waitApproval(ctx context.Context, mac string, discovery bool) (wire.ApprovalResponse, error) {
	wait := r.ApprovalWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	var lastStatus wire.Status = "-"
	for attempt := 0; ; {
		start := time.Now()
		a, err := r.API.Approval(ctx, mac, wait)
		longPoll := time.Since(start) >= wait/2
		switch {
		case discovery && client.IsNotFound(err):
			if lastStatus != "" {
				r.Log.Info("no task for this machine yet; waiting for an operator to create one", "mac", mac)
				lastStatus = ""
			}
			if longPoll {
				attempt = 0
				continue
			}
		case discovery && client.IsAuth(err):
			r.Log.Warn("discovery session refused; reporting the hardware again", "error", err)
			return a, errRediscover
		case client.IsAuth(err):
			return a, &BootAgainError{Err: fmt.Errorf("waiting for approval: %w", err)}
		case err != nil:
			return a, fmt.Errorf("waiting for approval: %w", err)
		case a.SessionToken != "":
			return a, &handOver{taskID: a.TaskID, token: a.SessionToken}
		case a.Status == wire.StatusCompleted,
			!r.StayAfterFailure && (a.Status == wire.StatusCancelled || a.Status == wire.StatusFailed):
			return a, &StopError{TaskID: a.TaskID, Status: a.Status, Reason: a.Reason}
		case a.Approved && a.Install != nil:
			return a, nil
		case a.Approved:
			r.Log.Warn("approved but the server sent no install spec; asking again", "task", a.TaskID)
		default:
			if a.Status != lastStatus {
				if a.Status == wire.StatusFailed || a.Status == wire.StatusCancelled {
					r.Log.Info("task ended; staying up for a retry", "task", a.TaskID, "status", a.Status, "reason", a.Reason)
				} else {
					r.Log.Info("waiting for approval", "task", a.TaskID, "status", a.Status)
				}
				lastStatus = a.Status
			}
			if longPoll {
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
	return &installFailed{err: cause}
}

// reporter turns install progress into wire.Progress with an increasing
// Seq. Seq follows the server's clock (microseconds, from the Date headers
// of its answers), not a counter from 1: a machine that reboots mid-install
// starts a new agent, whose reports must still sort after the ones the
// server already holds for this attempt, and the server refuses a seq
// beyond its own clock (the machine's RTC may be far off).
type reporter struct {
	api    *client.Client
	mac    string
	taskID string
	mu     sync.Mutex
	seq    int64
	next   time.Duration // the report interval the server asked for; 0: none
	// lastOf is this run's last report answered in each stage (by
	// wire.StageIndex): what the agent sends again when the server asks
	// (wire.Error.ResendFrom) because it lost answered reports.
	lastOf [5]*install.Progress
}

// nextInterval is the report interval the server last asked for.
func (p *reporter) nextInterval() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

func (p *reporter) report(ctx context.Context, pr install.Progress) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.send(ctx, pr)
	if from := client.ResendFrom(err); from != "" {
		// The server lost reports it had answered (a region restart before
		// it stored them): send this run's last of each stage from the
		// one it names up to this report's, then this report, once.
		err = p.resend(ctx, from, pr)
	}
	if client.IsConflict(err) {
		return fmt.Errorf("the server refused progress (task cancelled or taken over?): %w", err)
	}
	return err
}

func (p *reporter) resend(ctx context.Context, from string, pr install.Progress) error {
	i, cur := wire.StageIndex(from), wire.StageIndex(pr.Stage)
	if i < 0 || cur < 0 || i > cur {
		return fmt.Errorf("the server asks for progress again from stage %q, which this report (%s) does not follow", from, pr.Stage)
	}
	for ; i <= cur; i++ {
		last := p.lastOf[i]
		if last == nil || i == cur && last.Percentage >= pr.Percentage {
			continue // never sent (the server names what it expects next), or the report itself
		}
		if err := p.send(ctx, *last); err != nil {
			return fmt.Errorf("sending the %s report again: %w", last.Stage, err)
		}
	}
	return p.send(ctx, pr)
}

// send reports pr with the next seq and keeps it as its stage's last.
func (p *reporter) send(ctx context.Context, pr install.Progress) error {
	p.seq = max(p.seq+1, p.api.ServerNow().UnixMicro())
	resp, err := p.api.ReportProgress(ctx, wire.Progress{
		MACAddress: p.mac, TaskID: p.taskID, Seq: p.seq, Stage: pr.Stage, Percentage: pr.Percentage,
		Message: pr.Message, BytesDone: pr.BytesDone, BytesTotal: pr.BytesTotal,
		Partitions: pr.Partitions,
	})
	if err != nil {
		return err
	}
	// A loaded region asks for fewer reports (at most a minute apart).
	p.next = min(time.Duration(resp.NextReportMS)*time.Millisecond, time.Minute)
	if i := wire.StageIndex(pr.Stage); i >= 0 {
		p.lastOf[i] = &pr
	}
	return nil
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

// targetDisk resolves the server's choice to a device node, checking on
// the disks attached now that the name still holds that disk (a reboot can
// renumber sdX). Without a choice (older server), it picks the smallest
// fixed disk that holds the image.
func (r *Runner) targetDisk(spec wire.InstallSpec) (string, error) {
	dev := r.DevDir
	if dev == "" {
		dev = "/dev"
	}
	hw, err := r.Hardware()
	if err != nil {
		r.Log.Warn("some hardware details could not be read", "error", err)
	}
	want := spec.TargetDisk
	if want == nil {
		d, err := disksel.Select(hw.Disks, nil, spec.ImageSize)
		if err != nil {
			return "", fmt.Errorf("choosing the target disk: %w", err)
		}
		r.Log.Info("the server named no disk (older server): chose the smallest fixed disk that fits", "disk", disksel.Describe(d))
		return filepath.Join(dev, d.Name), nil
	}
	for _, d := range hw.Disks {
		if d.Name != want.Name {
			continue
		}
		if err := disksel.Same(*want, d); err != nil {
			return "", fmt.Errorf("target disk check, nothing written: %w%s", err, movedTo(*want, hw.Disks))
		}
		r.Log.Info("target disk verified", "disk", disksel.Describe(d))
		return filepath.Join(dev, d.Name), nil
	}
	return "", fmt.Errorf("target disk check, nothing written: the disk chosen before approval (%s) is not attached now%s; disks: %s",
		disksel.Describe(*want), movedTo(*want, hw.Disks), disksel.List(hw.Disks))
}

// movedTo says where the chosen disk is now when the kernel renamed it (a
// reboot can renumber sdX): the operator retries and approves again.
func movedTo(want wire.Disk, disks []wire.Disk) string {
	if want.WWN == "" && want.Serial == "" {
		return ""
	}
	for _, d := range disks {
		if d.Name != want.Name && disksel.Same(want, d) == nil {
			return fmt.Sprintf(" (that disk is now /dev/%s: retry the task so the server chooses again)", d.Name)
		}
	}
	return ""
}
