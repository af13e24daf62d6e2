package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/agent/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// imageSize is the number of bytes the task's image writes, 0 when the
// catalog has no image for it yet (approval refuses that case anyway).
func (s *Store) imageSize(ctx context.Context, sp Spec) (int64, error) {
	img, err := s.GetImage(ctx, sp.OSType, sp.OSVersion)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return img.Size, nil
}

// chooseDisk picks the disk the task's install erases among the reported
// disks. A selection failure wraps a disksel error (disksel.IsSelection).
// A report without any disk and a task without hints gives nil: there is
// nothing to choose from, and the agent (which fails when it finds no disk
// either) decides; such reports come from tests and demos, not machines.
func (s *Store) chooseDisk(ctx context.Context, sp Spec, hw wire.Hardware) (*TargetDisk, error) {
	if len(hw.Disks) == 0 && disksel.IsZero(sp.RootDeviceHints) {
		return nil, nil
	}
	size, err := s.imageSize(ctx, sp)
	if err != nil {
		return nil, err
	}
	d, err := disksel.Select(hw.Disks, sp.RootDeviceHints, size)
	if err != nil {
		return nil, err
	}
	by := ChosenByDefault
	if !disksel.IsZero(sp.RootDeviceHints) {
		by = ChosenByHints
	}
	return &TargetDisk{Disk: d, ChosenBy: by, Description: disksel.Describe(d)}, nil
}

// diskOps write td (or remove a stale choice when td is nil), with an
// event saying who chose it.
func diskOps(id string, sp Spec, td *TargetDisk) []clientv3.Op {
	if td == nil {
		return []clientv3.Op{clientv3.OpDelete(targetDiskKey(id))}
	}
	return []clientv3.Op{
		clientv3.OpPut(targetDiskKey(id), targetDiskValue(*td)),
		eventOp(id, Event{At: time.Now().UTC().Add(time.Nanosecond), Kind: "disk", Message: diskEventMessage(sp, *td)}),
	}
}

func diskEventMessage(sp Spec, td TargetDisk) string {
	switch td.ChosenBy {
	case ChosenByHints:
		return fmt.Sprintf("target disk (root_device_hints %s): %s", disksel.String(*sp.RootDeviceHints), td.Description)
	case ChosenByOperator:
		return "target disk set by the operator at approval: " + td.Description
	}
	return "target disk (smallest fixed disk that holds the image): " + td.Description
}

// failOnDisk fails a ready or pending_approval task whose disk cannot be
// chosen, keeping the hardware report so the operator sees the disks.
func (s *Store) failOnDisk(ctx context.Context, id string, hw wire.Hardware, cause error) (Task, error) {
	reason := "no target disk, nothing was written: " + cause.Error()
	t, err := s.transition(ctx, id, wire.StatusFailed, reason, func(t Task) ([]clientv3.Op, []clientv3.Cmp, error) {
		if st := t.Status.Status; st != wire.StatusReady && st != wire.StatusPendingApproval {
			return nil, nil, &TransitionError{ID: id, From: st, To: wire.StatusPendingApproval}
		}
		return []clientv3.Op{
			clientv3.OpPut(hardwareKey(id), mustJSON(hw)),
			clientv3.OpDelete(targetDiskKey(id)),
		}, nil, nil
	})
	if err != nil {
		return t, err
	}
	t.Hardware, t.TargetDisk = &hw, nil
	return t, nil
}

// Approve moves a task to approved. disk, when set, names the disk to erase
// instead of the server's choice (kernel name, serial, wwn or by-path): it
// must match exactly one reported disk that holds the image, else
// ErrInvalid with the disks listed; the choice is stored in the same
// transaction as the approval.
func (s *Store) Approve(ctx context.Context, id, disk string) (Task, error) {
	var chosen *TargetDisk
	t, err := s.transition(ctx, id, wire.StatusApproved, "approved by "+ActorFrom(ctx), func(t Task) ([]clientv3.Op, []clientv3.Cmp, error) {
		if disk == "" {
			return nil, nil, nil
		}
		if t.Hardware == nil {
			return nil, nil, fmt.Errorf("%w: disk %q: task %s has no hardware report", ErrInvalid, disk, id)
		}
		d, err := disksel.Resolve(t.Hardware.Disks, disk)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: disk: %v", ErrInvalid, err)
		}
		size, err := s.imageSize(ctx, t.Spec)
		if err != nil {
			return nil, nil, err
		}
		if d.SizeBytes < uint64(max(size, 1)) {
			return nil, nil, fmt.Errorf("%w: disk: %s is smaller than the %s image (%s)", ErrInvalid, disksel.Describe(d), t.Spec.OSType+" "+t.Spec.OSVersion, disksel.Size(uint64(size)))
		}
		td := &TargetDisk{Disk: d, ChosenBy: ChosenByOperator, Description: disksel.Describe(d)}
		if t.TargetDisk != nil && t.TargetDisk.Disk == d {
			td.ChosenBy = t.TargetDisk.ChosenBy // the operator confirmed the server's choice
		}
		chosen = td
		return diskOps(id, t.Spec, td), nil, nil
	})
	if err != nil {
		return t, err
	}
	if chosen != nil {
		t.TargetDisk = chosen
	}
	return t, nil
}
