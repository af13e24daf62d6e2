package powermgr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/power"
	"github.com/lpmos/lpmos/store"
)

// step is one BMC call of an action; it says what it did.
type step struct {
	name string
	fn   func(context.Context, power.Driver) (string, error)
}

func setBoot(dev power.BootDevice) step {
	return step{"set next boot to " + string(dev), func(ctx context.Context, d power.Driver) (string, error) {
		return "next boot from " + string(dev), d.SetBootDevice(ctx, dev, true)
	}}
}

var (
	stepOn = step{"power on", func(ctx context.Context, d power.Driver) (string, error) {
		return "powered on", d.On(ctx)
	}}
	stepOff = step{"power off", func(ctx context.Context, d power.Driver) (string, error) {
		return "powered off", d.Off(ctx)
	}}
	stepCycle = step{"power cycle", func(ctx context.Context, d power.Driver) (string, error) {
		return "power cycled", d.Cycle(ctx)
	}}
	// stepOnOrCycle powers a machine on, or cycles it when it is on, so
	// it boots (into PXE) either way.
	stepOnOrCycle = step{"power on or cycle", func(ctx context.Context, d power.Driver) (string, error) {
		st, err := d.Status(ctx)
		if err != nil {
			return "", err
		}
		if st == power.On {
			return "power cycled (it was on)", d.Cycle(ctx)
		}
		return "powered on (it was " + string(st) + ")", d.On(ctx)
	}}
)

func actionSteps(action string) []step {
	switch action {
	case "on":
		return []step{stepOn}
	case "off":
		return []step{stepOff}
	case "cycle":
		return []step{stepCycle}
	case "pxe":
		return []step{setBoot(power.PXE)}
	case "disk":
		return []step{setBoot(power.Disk)}
	}
	return nil
}

// bmcOf opens the task's BMC and builds its driver.
func (m *Manager) bmcOf(ctx context.Context, id string) (power.Driver, power.BMC, error) {
	in, err := m.st.TaskBMC(ctx, id)
	if err != nil {
		return nil, power.BMC{}, err
	}
	b := power.BMC{Protocol: in.Protocol, Address: in.Address, Username: in.Username, Password: in.Password,
		SystemID: in.SystemID, InsecureTLS: in.InsecureSkipVerify, Timeout: m.cfg.Timeout}
	d, err := m.cfg.NewDriver(b)
	if err != nil {
		return nil, b, fmt.Errorf("%s: %s", b, scrub(err.Error(), b.Password))
	}
	return d, b, nil
}

func (m *Manager) perform(ctx context.Context, id string, j job) {
	switch j.kind {
	case "poll":
		m.poll(ctx, id)
	case "request":
		m.request(ctx, id, j.req)
	case "boot":
		m.boot(ctx, id, j.attempt)
	case "finish":
		m.finish(ctx, id, j.attempt)
	}
}

// event records a power event on the task and logs it.
func (m *Manager) event(ctx context.Context, id, msg string, failed bool) {
	if failed {
		m.log.Warn("power: "+msg, "task", id)
	} else {
		m.log.Info("power: "+msg, "task", id)
	}
	if err := m.st.AddPowerEvent(ctx, id, msg); err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
		m.log.Warn("power: record event", "task", id, "error", err)
	}
}

// run performs an action's steps in order, each retried with backoff; the
// result (or the BMC's error) becomes one event. It reports success.
func (m *Manager) run(ctx context.Context, id, title string, steps []step) bool {
	d, b, err := m.bmcOf(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "has no BMC") {
			m.event(ctx, id, fmt.Sprintf("%s failed: %v", title, err), true)
		}
		return false
	}
	tries := 1 + m.cfg.Retries
	var done []string
	for _, s := range steps {
		wait := m.cfg.Backoff
		for try := 1; ; try++ {
			t0 := time.Now()
			what, err := s.fn(ctx, d)
			m.observe(s.name, err, time.Since(t0))
			if err == nil {
				done = append(done, what)
				break
			}
			msg := scrub(err.Error(), b.Password)
			if ctx.Err() != nil {
				return false
			}
			if try >= tries {
				m.event(ctx, id, fmt.Sprintf("%s failed: %s failed after %d tries: %s; the task is unchanged: fix the BMC (lpmos power set-bmc %s, or PUT /api/v1/tasks/%s/bmc) and ask again (lpmos power on|cycle|pxe, or retry the task), or power the machine by hand",
					title, s.name, tries, msg, id, id), true)
				return false
			}
			m.event(ctx, id, fmt.Sprintf("%s: %s failed (try %d of %d), retrying in %s: %s", title, s.name, try, tries, wait, msg), true)
			if !sleep(ctx, wait) {
				return false
			}
			wait = min(2*wait, maxBackoff)
		}
	}
	m.event(ctx, id, fmt.Sprintf("%s: %s (%s)", title, strings.Join(done, ", "), b), false)
	return true
}

// boot powers a ready task's machine into PXE: next boot from the network,
// then on (or cycled when on). A task already past ready (its agent runs)
// is left alone.
func (m *Manager) boot(ctx context.Context, id string, attempt int) {
	t, err := m.st.GetTask(ctx, id)
	if err != nil || t.BMC == nil || t.Status.Attempt != attempt {
		return
	}
	switch t.Status.Status {
	case wire.StatusReady:
	case wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling:
		if ok, _ := m.st.MarkPowerLifecycle(ctx, id, "booted", attempt); ok {
			m.event(ctx, id, fmt.Sprintf("attempt %d: the agent already runs (task is %s): not power-cycling it", attempt, t.Status.Status), false)
		}
		return
	default:
		return
	}
	// The machine may be booting already (it PXE-booted by itself and
	// the region claimed the task for it), or a live agent took the task:
	// give that a moment to show, and leave such a machine alone.
	if !sleep(ctx, m.cfg.SettleDelay) {
		return
	}
	if t, err = m.st.GetTask(ctx, id); err != nil || t.Status.Status != wire.StatusReady || t.Status.Attempt != attempt {
		if err == nil && t.Status.Attempt == attempt {
			m.boot(ctx, id, attempt) // moved on: the agent runs
		}
		return
	}
	why, err := m.st.MachineBooting(ctx, id, attempt)
	if err != nil {
		m.log.Warn("power: read boot state", "task", id, "error", err)
		return
	}
	ok, err := m.st.MarkPowerLifecycle(ctx, id, "booted", attempt)
	if err != nil || !ok {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			m.log.Warn("power: mark boot", "task", id, "error", err)
		}
		return
	}
	if why != "" {
		m.event(ctx, id, fmt.Sprintf("attempt %d: not powering the machine on: %s", attempt, why), false)
		return
	}
	if m.run(ctx, id, fmt.Sprintf("boot into PXE (attempt %d)", attempt), []step{setBoot(power.PXE), stepOnOrCycle}) {
		m.poll(ctx, id)
	}
}

// finish reboots a completed task's machine into its installed OS.
func (m *Manager) finish(ctx context.Context, id string, attempt int) {
	if !sleep(ctx, m.cfg.RebootDelay) {
		return
	}
	t, err := m.st.GetTask(ctx, id)
	if err != nil || t.BMC == nil || t.Status.Status != wire.StatusCompleted || t.Status.Attempt != attempt {
		return
	}
	ok, err := m.st.MarkPowerLifecycle(ctx, id, "finished", attempt)
	if err != nil || !ok {
		return
	}
	if ago := time.Since(t.Status.UpdatedAt); ago > finishWithin {
		m.event(ctx, id, fmt.Sprintf("completed %s ago: its agent rebooted the machine by itself; not power-cycling the installed OS", ago.Round(time.Second)), false)
		return
	}
	if m.run(ctx, id, "reboot into the installed OS", []step{setBoot(power.Disk), stepCycle}) {
		m.poll(ctx, id)
	}
}

// request takes an action asked through the API off the queue (deleting
// it: of two processes serving the region, one performs it) and performs
// it.
func (m *Manager) request(ctx context.Context, id string, r store.PowerRequest) {
	took, err := m.st.DonePowerRequest(ctx, r.Key)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("power: take request", "task", id, "key", r.Key, "error", err)
		}
		return // still queued: the next listing (a restart, a resync) takes it
	}
	if !took {
		return
	}
	steps := actionSteps(r.Action)
	if steps == nil {
		m.event(ctx, id, fmt.Sprintf("power %q requested by %s: unknown action, ignored", r.Action, r.RequestedBy), true)
		return
	}
	if _, err := m.st.GetTask(ctx, id); err != nil {
		return // deleted meanwhile
	}
	if m.run(ctx, id, fmt.Sprintf("power %s (requested by %s)", r.Action, r.RequestedBy), steps) && r.Action != "pxe" && r.Action != "disk" {
		m.poll(ctx, id)
	}
}

// poll reads the machine's power state and stores it when it changed (or
// every ten intervals, so checked_at says the poller is alive).
func (m *Manager) poll(ctx context.Context, id string) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-m.sem }()
	d, b, err := m.bmcOf(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	ps := store.PowerState{State: store.PowerUnknown, CheckedAt: time.Now().UTC()}
	if err == nil {
		var st power.State
		t0 := time.Now()
		st, err = d.Status(ctx)
		m.observe("status", err, time.Since(t0))
		ps.State = string(st)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		ps.State, ps.Error = store.PowerUnknown, scrub(err.Error(), b.Password)
	}
	refresh := 10 * m.cfg.PollInterval
	if refresh <= 0 {
		refresh = 10 * time.Minute
	}
	m.mu.Lock()
	old, had := m.written[id]
	m.mu.Unlock()
	if had && old.State == ps.State && old.Error == ps.Error && ps.CheckedAt.Sub(old.CheckedAt) < refresh {
		return
	}
	if err := m.st.SetPowerState(ctx, id, ps); err != nil {
		if ctx.Err() == nil {
			m.log.Warn("power: store state", "task", id, "error", err)
		}
		return
	}
	if had && old.Error == "" && ps.Error != "" {
		m.log.Warn("power: BMC not answering", "task", id, "bmc", b.String(), "error", ps.Error)
	}
	m.mu.Lock()
	m.written[id] = ps
	m.mu.Unlock()
}

// observe tells Config.Observe about one BMC call.
func (m *Manager) observe(step string, err error, took time.Duration) {
	if m.cfg.Observe != nil {
		m.cfg.Observe(step, err, took)
	}
}
