package agentapi

import (
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// hardwareAnswer answers a stored hardware report. A task that failed on
// it (no disk matches its root-device hints: store.SetHardware) carries the
// reason, so the agent stops at once and says why.
func hardwareAnswer(t store.Task) wire.HardwareResponse {
	resp := wire.HardwareResponse{TaskID: t.ID, Status: t.Status.Status}
	if !t.Status.Status.Active() {
		resp.Reason = t.Status.Reason
	}
	return resp
}

// targetDisk is the disk the agent must write (nil: none chosen, e.g. a
// task approved before this server version; the agent then chooses).
func targetDisk(t store.Task) *wire.Disk {
	if t.TargetDisk == nil {
		return nil
	}
	d := t.TargetDisk.Disk
	return &d
}
