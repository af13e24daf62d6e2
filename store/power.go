package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventKindPower is the kind of a task's power events: every power action
// the region performed and its result (the BMC's own error on failure),
// and BMC changes.
const EventKindPower = "power"

// Power states as stored (the power package's states).
const (
	PowerOn      = "on"
	PowerOff     = "off"
	PowerUnknown = "unknown"
)

// PowerState is /tasks/{id}/power: the machine's power state as the
// owning region last read it from the BMC. Error is set while the BMC does
// not answer (State is then "unknown").
type PowerState struct {
	State     string    `json:"state"`
	CheckedAt time.Time `json:"checked_at"`
	Error     string    `json:"error,omitempty"`
}

// PowerActions a region performs on request.
var PowerActions = []string{"on", "off", "cycle", "pxe", "disk"}

// ValidPowerAction reports whether a is one of PowerActions.
func ValidPowerAction(a string) bool {
	for _, x := range PowerActions {
		if a == x {
			return true
		}
	}
	return false
}

// PowerRequest is /power-requests/{region}/{task-id}/{unix-nanos}: a power
// action asked through the API, performed (and deleted) by the region that
// owns the task.
type PowerRequest struct {
	TaskID      string    `json:"task_id"`
	RegionID    string    `json:"region_id"`
	Action      string    `json:"action"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	Key         string    `json:"-"` // the etcd key, to delete it once done
}

// PowerLifecycle is /tasks/{id}/power-lifecycle: which attempt the region
// already powered on into PXE (Booted) and rebooted to disk after
// completion (Finished), so a region restart does not do either twice.
type PowerLifecycle struct {
	Booted   int `json:"booted,omitempty"`
	Finished int `json:"finished,omitempty"`
}

// taskGuard holds while the task exists.
func taskGuard(id string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(specKey(id)), ">", 0)
}

// RequestPower queues a power action for the region that owns the task.
// A task without a BMC is ErrConflict (set one first).
func (s *Store) RequestPower(ctx context.Context, id, action, actor string) (PowerRequest, error) {
	if !ValidPowerAction(action) {
		return PowerRequest{}, fmt.Errorf("%w: action %q: use one of %s", ErrInvalid, truncate(action, 20), strings.Join(PowerActions, ", "))
	}
	t, err := s.GetTask(ctx, id)
	if err != nil {
		return PowerRequest{}, err
	}
	if t.BMC == nil {
		return PowerRequest{}, fmt.Errorf("%w: task %s has no BMC: set one with PUT /api/v1/tasks/%s/bmc (or lpmos task create --bmc)", ErrConflict, id, id)
	}
	now := time.Now().UTC()
	req := PowerRequest{TaskID: id, RegionID: t.Spec.RegionID, Action: action, RequestedBy: actor, RequestedAt: now}
	req.Key = powerRequestKey(req.RegionID, id, now)
	resp, err := s.cli.Txn(ctx).If(taskGuard(id), clientv3.Compare(clientv3.CreateRevision(bmcKey(id)), ">", 0)).
		Then(clientv3.OpPut(req.Key, mustJSON(req))).Commit()
	if err != nil {
		return PowerRequest{}, fmt.Errorf("queue power %s for %s: %w", action, id, err)
	}
	if !resp.Succeeded {
		return PowerRequest{}, fmt.Errorf("%w: task %s or its BMC was removed meanwhile", ErrConflict, id)
	}
	return req, nil
}

// PowerRequests lists the queued requests of a region, oldest first.
func (s *Store) PowerRequests(ctx context.Context, region string) ([]PowerRequest, int64, error) {
	resp, err := s.cli.Get(ctx, powerRequestsPrefix(region), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list power requests of %s: %w", region, err)
	}
	var out []PowerRequest
	for _, kv := range resp.Kvs {
		var r PowerRequest
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			s.log.Warn("store: skip undecodable power request", "key", string(kv.Key), "error", err)
			continue
		}
		r.Key = string(kv.Key)
		out = append(out, r)
	}
	return out, resp.Header.Revision, nil
}

// DonePowerRequest deletes a performed request; it reports whether it was
// still there (false: another worker took it).
func (s *Store) DonePowerRequest(ctx context.Context, key string) (bool, error) {
	if !strings.HasPrefix(key, prefixPowerRequests) {
		return false, fmt.Errorf("%w: %q is not a power request key", ErrInvalid, key)
	}
	resp, err := s.cli.Delete(ctx, key)
	if err != nil {
		return false, fmt.Errorf("delete power request: %w", err)
	}
	return resp.Deleted > 0, nil
}

// SetPowerState stores a task's polled power state (not for a deleted task).
func (s *Store) SetPowerState(ctx context.Context, id string, ps PowerState) error {
	_, err := s.cli.Txn(ctx).If(taskGuard(id)).Then(clientv3.OpPut(powerKey(id), mustJSON(ps))).Commit()
	if err != nil {
		return fmt.Errorf("store power state of %s: %w", id, err)
	}
	return nil
}

// AddPowerEvent appends a power event to a task's history.
func (s *Store) AddPowerEvent(ctx context.Context, id, msg string) error {
	ops, err := s.boundEvents(ctx, id, []clientv3.Op{eventOp(id, Event{At: time.Now().UTC(), Kind: EventKindPower, Message: msg})})
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).If(taskGuard(id)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("record power event of %s: %w", id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	return nil
}

// MarkPowerLifecycle records that the region did the lifecycle step
// ("booted" or "finished") for attempt; it reports false when that attempt
// (or a later one) was already marked, so two workers never both act.
func (s *Store) MarkPowerLifecycle(ctx context.Context, id, step string, attempt int) (bool, error) {
	for range maxTxnRetries {
		resp, err := s.cli.Get(ctx, powerLifecycleKey(id))
		if err != nil {
			return false, fmt.Errorf("read power lifecycle of %s: %w", id, err)
		}
		var lc PowerLifecycle
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if err := json.Unmarshal(resp.Kvs[0].Value, &lc); err != nil {
				return false, fmt.Errorf("decode power lifecycle of %s: %w", id, err)
			}
		}
		switch step {
		case "booted":
			if lc.Booted >= attempt {
				return false, nil
			}
			lc.Booted = attempt
		case "finished":
			if lc.Finished >= attempt {
				return false, nil
			}
			lc.Finished = attempt
		default:
			return false, fmt.Errorf("%w: lifecycle step %q", ErrInvalid, step)
		}
		tr, err := s.cli.Txn(ctx).If(taskGuard(id), clientv3.Compare(clientv3.ModRevision(powerLifecycleKey(id)), "=", rev)).
			Then(clientv3.OpPut(powerLifecycleKey(id), mustJSON(lc))).Commit()
		if err != nil {
			return false, fmt.Errorf("mark power lifecycle of %s: %w", id, err)
		}
		if tr.Succeeded {
			return true, nil
		}
		if g, err := s.cli.Get(ctx, specKey(id), clientv3.WithCountOnly()); err == nil && g.Count == 0 {
			return false, fmt.Errorf("%w: task %s", ErrNotFound, id)
		}
	}
	return false, fmt.Errorf("mark power lifecycle of %s: %w: too much contention", id, ErrConflict)
}

// MachineBooting says why a task's machine needs no power-on for attempt:
// an iPXE script was served for the attempt (the machine is booting), or
// an agent holds a session of the attempt (it runs). "" when neither.
func (s *Store) MachineBooting(ctx context.Context, id string, attempt int) (string, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(bootstrapKey(id)), clientv3.OpGet(sessionKey(id))).Commit()
	if err != nil {
		return "", fmt.Errorf("read boot state of %s: %w", id, err)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		var bt bootToken
		if json.Unmarshal(kvs[0].Value, &bt) == nil && bt.Attempt == attempt {
			return fmt.Sprintf("an iPXE script was served for attempt %d at %s: the machine is booting", attempt, bt.IssuedAt.Format(time.TimeOnly)), nil
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		var se Session
		if json.Unmarshal(kvs[0].Value, &se) == nil && se.Attempt == attempt {
			return fmt.Sprintf("its agent holds a session of attempt %d (%s): it runs", attempt, se.describe()), nil
		}
	}
	return "", nil
}
