package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/pxe"
	"github.com/lpmos/lpmos/store"
)

// Region implements the pxe package's consumer interfaces: Decide for the
// boot HTTP handler (already wired into Handler()) and Allowed for the
// proxyDHCP server. Use Leases (or NewLeases) for full DHCP mode.
var (
	_ pxe.Decider  = (*Region)(nil)
	_ pxe.Machines = (*Region)(nil)
)

// Decide implements pxe.Decider: what the machine with this MAC boots.
//
//	task of this region ready/pending_approval/approved/installing/stalled
//	                      -> the agent, with the task id and a fresh boot token
//	pending (not claimed yet) -> claimed now, then the agent
//	completed, failed, cancelled, or a task of another region -> local disk
//	no task               -> discovery when DiscoverUnknown, else local disk
//
// Every script carries a new random boot token (single use, BootTokenTTL)
// that replaces the previous one: the agent exchanges it for its session.
func (r *Region) Decide(ctx context.Context, mac net.HardwareAddr) (pxe.Decision, error) {
	local := pxe.Decision{Action: pxe.ActionLocal}
	t, err := r.st.TaskByMAC(ctx, mac.String())
	if errors.Is(err, store.ErrNotFound) {
		if r.cfg.DiscoverUnknown {
			return pxe.Decision{Action: pxe.ActionDiscover}, nil
		}
		return local, nil
	}
	if err != nil {
		return pxe.Decision{}, err
	}
	if t.Spec.RegionID != r.cfg.RegionID {
		r.log.Info("boot: MAC belongs to a task of another region", "mac", mac.String(), "task", t.ID, "task_region", t.Spec.RegionID)
		return local, nil
	}
	if t.Status.Status == wire.StatusPending {
		claimed, err := r.st.ClaimTask(ctx, t.ID, "")
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return pxe.Decision{}, err
		}
		if err == nil {
			t = claimed
		} else if t, err = r.st.GetTask(ctx, t.ID); err != nil {
			return pxe.Decision{}, err
		}
	}
	switch t.Status.Status {
	case wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled:
	default:
		return local, nil
	}
	token, err := r.st.IssueBootToken(ctx, t.ID, r.cfg.BootTokenTTL)
	if err != nil {
		return pxe.Decision{}, fmt.Errorf("mint boot token for task %s: %w", t.ID, err)
	}
	r.log.Info("boot: boot token issued", "task", t.ID, "attempt", t.Status.Attempt, "mac", mac.String())
	return pxe.Decision{Action: pxe.ActionInstall, TaskID: t.ID, Token: token}, nil
}

// Allowed implements pxe.Machines: the DHCP server answers a MAC with an
// active or completed task of this region (a completed machine must get its
// "exit to local disk" script), or any MAC without a task of this region
// when DiscoverUnknown is on. A task of another region is never answered.
func (r *Region) Allowed(ctx context.Context, mac net.HardwareAddr) (bool, error) {
	t, err := r.st.TaskByMAC(ctx, mac.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return r.cfg.DiscoverUnknown, nil
	case err != nil:
		return false, err
	case t.Spec.RegionID != r.cfg.RegionID:
		return false, nil
	case t.Status.Status.Active(), t.Status.Status == wire.StatusCompleted:
		return true, nil
	}
	return r.cfg.DiscoverUnknown, nil
}

// Leases returns the etcd-backed lease store for the full DHCP mode of
// this region's pxe.ProxyDHCP.
func (r *Region) Leases() pxe.Leases { return NewLeases(r.st, r.cfg.RegionID) }

// NewLeases returns a pxe.Leases kept under /leases/{mac} in etcd. region is
// recorded with each lease (informational).
func NewLeases(st *store.Store, region string) pxe.Leases {
	return &leases{st: st, region: region}
}

type leases struct {
	st     *store.Store
	region string
}

func (l *leases) Get(ctx context.Context, mac net.HardwareAddr) (pxe.Lease, bool, error) {
	sl, err := l.st.GetLease(ctx, mac.String())
	if errors.Is(err, store.ErrNotFound) {
		return pxe.Lease{}, false, nil
	}
	if err != nil {
		return pxe.Lease{}, false, err
	}
	pl, err := fromStore(sl)
	if err != nil {
		return pxe.Lease{}, false, err
	}
	return pl, true, nil
}

func (l *leases) Put(ctx context.Context, pl pxe.Lease) error {
	ip := pl.IP.To4()
	if ip == nil {
		return fmt.Errorf("lease of %s: %v is not IPv4", pl.MAC, pl.IP)
	}
	return l.st.PutLease(ctx, store.DHCPLease{MAC: pl.MAC.String(), IP: ip.String(), Expires: pl.Expires.UTC(), RegionID: l.region})
}

func (l *leases) List(ctx context.Context) ([]pxe.Lease, error) {
	all, err := l.st.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]pxe.Lease, 0, len(all))
	for _, sl := range all {
		pl, err := fromStore(sl)
		if err != nil {
			continue // PutLease validates; a bad entry is someone else's
		}
		out = append(out, pl)
	}
	return out, nil
}

func fromStore(sl store.DHCPLease) (pxe.Lease, error) {
	mac, err := net.ParseMAC(sl.MAC)
	if err != nil {
		return pxe.Lease{}, fmt.Errorf("lease %s: %w", sl.MAC, err)
	}
	ip := net.ParseIP(sl.IP).To4()
	if ip == nil {
		return pxe.Lease{}, fmt.Errorf("lease %s: bad address %q", sl.MAC, sl.IP)
	}
	return pxe.Lease{MAC: mac, IP: ip, Expires: sl.Expires.In(time.Local)}, nil
}
