package ui

import (
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// The hub keeps a compact summary of each task: what the dashboard's list
// rows, filters, sorts and search need (spec without keys, user data, hints
// or network; status; progress without the partition table; the hardware's
// hostname and DMI identity; target disk; BMC and power). The detail view
// (full hardware, disks, NICs, partitions, events) is read on demand from
// GET /api/v1/tasks/{id}. With 10,000 tasks this keeps the hub, and every
// /ws snapshot, a fraction of the whole tasks' size.

// TaskSummary is a task as /ws sends it (snapshot and "task" messages).
type TaskSummary struct {
	ID         string             `json:"id"`
	Spec       SpecSummary        `json:"spec"`
	Status     store.StatusRecord `json:"status"`
	Hardware   *HardwareSummary   `json:"hardware,omitempty"`
	Progress   *wire.Progress     `json:"progress,omitempty"`
	Revision   int64              `json:"revision"`
	TargetDisk *store.TargetDisk  `json:"target_disk,omitempty"`
	BMC        *store.BMCInfo     `json:"bmc,omitempty"`
	Power      *store.PowerState  `json:"power,omitempty"`
}

// SpecSummary is the part of a task's spec the list shows.
type SpecSummary struct {
	RegionID  string    `json:"region_id"`
	TargetMAC string    `json:"target_mac"`
	OSType    string    `json:"os_type"`
	OSVersion string    `json:"os_version"`
	Hostname  string    `json:"hostname,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// HardwareSummary is the part of a hardware report the list shows and
// searches: the reported hostname and the machine's DMI identity.
type HardwareSummary struct {
	Hostname string     `json:"hostname,omitempty"`
	DMI      DMISummary `json:"dmi"`
}

// DMISummary is the DMI identity of a machine.
type DMISummary struct {
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
	Serial  string `json:"serial,omitempty"`
}

// compactSpec keeps what a summary needs of a spec.
func compactSpec(s store.Spec) store.Spec {
	return store.Spec{RegionID: s.RegionID, TargetMAC: s.TargetMAC, OSType: s.OSType, OSVersion: s.OSVersion,
		Hostname: s.Hostname, CreatedAt: s.CreatedAt}
}

// compactHardware keeps the hostname and DMI identity of a report.
func compactHardware(hw *wire.Hardware) *wire.Hardware {
	if hw == nil {
		return nil
	}
	return &wire.Hardware{Hostname: hw.Hostname, DMI: wire.DMI{Vendor: hw.DMI.Vendor, Product: hw.DMI.Product, Serial: hw.DMI.Serial}}
}

// compactProgress drops the partition table and the agent's echo of its
// MAC from a progress record. The task id stays: it is the task's own id
// string (no copy), and without it the dashboard's progress read
// "task_id":"" where the API's task says the id.
func compactProgress(p *wire.Progress) *wire.Progress {
	if p == nil {
		return nil
	}
	c := *p
	c.Partitions, c.MACAddress = nil, ""
	return &c
}

// compactTargetDisk keeps what the list and the approval need of the
// disk to erase: its name, size, description and who chose it.
func compactTargetDisk(d *store.TargetDisk) *store.TargetDisk {
	if d == nil {
		return nil
	}
	return &store.TargetDisk{Disk: wire.Disk{Name: d.Name, SizeBytes: d.SizeBytes}, ChosenBy: d.ChosenBy, Description: d.Description}
}

// compactTask is the hub's copy of t: its summary fields only.
func compactTask(t store.Task) store.Task {
	return store.Task{ID: t.ID, Spec: compactSpec(t.Spec), Status: t.Status, Hardware: compactHardware(t.Hardware),
		Progress: compactProgress(t.Progress), Revision: t.Revision, TargetDisk: compactTargetDisk(t.TargetDisk), BMC: t.BMC, Power: t.Power}
}

// indexedTask is the hub's copy of a task from the store's task index
// (Store.TaskSummaries). Its hardware is the index's own summary, shared
// rather than copied: the index replaces a task's hardware on each report
// and never changes it in place, and summaryOf reads only its hostname and
// DMI identity.
func indexedTask(t store.Task) store.Task {
	c := compactTask(store.Task{ID: t.ID, Spec: t.Spec, Status: t.Status, Progress: t.Progress, Revision: t.Revision,
		TargetDisk: t.TargetDisk, BMC: t.BMC, Power: t.Power})
	c.Hardware = t.Hardware
	return c
}

// summaryOf is the /ws form of the hub's (compacted) task.
func summaryOf(t *store.Task) TaskSummary {
	s := TaskSummary{ID: t.ID, Spec: SpecSummary{RegionID: t.Spec.RegionID, TargetMAC: t.Spec.TargetMAC,
		OSType: t.Spec.OSType, OSVersion: t.Spec.OSVersion, Hostname: t.Spec.Hostname, CreatedAt: t.Spec.CreatedAt},
		Status: t.Status, Hardware: hardwareSummary(t.Hardware), Progress: t.Progress, Revision: t.Revision,
		TargetDisk: t.TargetDisk, BMC: t.BMC, Power: t.Power}
	return s
}

func hardwareSummary(hw *wire.Hardware) *HardwareSummary {
	if hw == nil {
		return nil
	}
	return &HardwareSummary{Hostname: hw.Hostname, DMI: DMISummary{Vendor: hw.DMI.Vendor, Product: hw.DMI.Product, Serial: hw.DMI.Serial}}
}
