package ui

import "github.com/lpmos/lpmos/store"

// /ws messages of power control (issue 13).
const (
	// MsgPower carries a task's polled power state.
	MsgPower = "power"
	// MsgBMC carries a task's BMC, without its password (bmc null: removed).
	MsgBMC = "bmc"
)

// PowerMessage is {"type":"power",...}.
type PowerMessage struct {
	Type     string            `json:"type"`
	TaskID   string            `json:"task_id"`
	Revision int64             `json:"revision"`
	Power    *store.PowerState `json:"power"`
}

// BMCMessage is {"type":"bmc",...}.
type BMCMessage struct {
	Type     string         `json:"type"`
	TaskID   string         `json:"task_id"`
	Revision int64          `json:"revision"`
	BMC      *store.BMCInfo `json:"bmc"`
}

// applyPowerLocked folds a KindBMC or KindPower change into the hub's task
// and returns its message (nil: nothing to send).
func (h *Hub) applyPowerLocked(c store.Change) any {
	t := h.tasks[c.TaskID]
	if t == nil {
		return nil
	}
	h.snap = nil
	if c.Kind == store.KindPower {
		t.Power = c.Power
	} else {
		t.BMC = c.BMC
	}
	if !t.complete {
		return nil
	}
	if c.Kind == store.KindPower {
		return PowerMessage{Type: MsgPower, TaskID: c.TaskID, Revision: c.Revision, Power: c.Power}
	}
	return BMCMessage{Type: MsgBMC, TaskID: c.TaskID, Revision: c.Revision, BMC: c.BMC}
}
