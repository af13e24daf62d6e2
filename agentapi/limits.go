package agentapi

import (
	"net/http"
	"strconv"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
)

// Limits of a hardware report. A real machine's report is a few KiB; these
// bound what one request (and one stored machine or task) can cost.
const (
	// MaxHardwareBody caps the body of POST /api/v1/agent/hardware (413).
	MaxHardwareBody = 64 << 10
	maxNameBytes    = 64  // device and interface names, MACs, ids, UUIDs
	maxTextBytes    = 256 // models, serials, vendors, versions, drivers
	maxDisks        = 256
	maxNICs         = 128
)

// limit is one rule of a hardware report: a string's length, a list's
// length, or a number's range.
type limit struct {
	field  string
	n      int64 // bytes, entries or the value
	lo, hi int64
	unit   string // "bytes", "entries", or "" for a value
}

func text(field, s string, max int) limit {
	return limit{field: field, n: int64(len(s)), hi: int64(max), unit: "bytes"}
}

func count(field string, n, max int) limit {
	return limit{field: field, n: int64(n), hi: int64(max), unit: "entries"}
}

func value(field string, v, lo, hi int64) limit {
	return limit{field: field, n: v, lo: lo, hi: hi}
}

func (l limit) err() *httpapi.Error {
	if l.n >= l.lo && l.n <= l.hi {
		return nil
	}
	if l.unit != "" {
		return httpapi.Errorf(http.StatusBadRequest, "%s: %d %s, at most %d", l.field, l.n, l.unit, l.hi)
	}
	return httpapi.Errorf(http.StatusBadRequest, "%s: %d, want %d..%d", l.field, l.n, l.lo, l.hi)
}

// hardwareLimits lists every rule of rep. Adding a field to wire.Hardware
// (or Disk, NIC, DMI) means adding its line here.
func hardwareLimits(rep *wire.HardwareReport) []limit {
	h := &rep.Hardware
	l := []limit{
		text("mac_address", rep.MACAddress, maxNameBytes),
		text("task_id", rep.TaskID, maxNameBytes),
		text("hardware.cpu.model", h.CPU.Model, maxTextBytes),
		value("hardware.cpu.sockets", int64(h.CPU.Sockets), 0, 1<<10),
		value("hardware.cpu.cores", int64(h.CPU.Cores), 0, 1<<20),
		value("hardware.cpu.threads", int64(h.CPU.Threads), 0, 1<<20),
		value("hardware.memory.total_gb", int64(h.Memory.TotalGB), 0, 1<<30),
		count("hardware.disks", len(h.Disks), maxDisks),
		count("hardware.nics", len(h.NICs), maxNICs),
		text("hardware.dmi.vendor", h.DMI.Vendor, maxTextBytes),
		text("hardware.dmi.product", h.DMI.Product, maxTextBytes),
		text("hardware.dmi.serial", h.DMI.Serial, maxTextBytes),
		text("hardware.dmi.uuid", h.DMI.UUID, maxNameBytes),
		text("hardware.dmi.bios_vendor", h.DMI.BIOSVendor, maxTextBytes),
		text("hardware.dmi.bios_version", h.DMI.BIOSVersion, maxTextBytes),
		text("hardware.dmi.bios_date", h.DMI.BIOSDate, maxNameBytes),
		text("hardware.boot_mode", h.BootMode, 16),
		text("hardware.hostname", h.Hostname, 253),
		text("hardware.kernel", h.Kernel, maxTextBytes),
	}
	if len(h.Disks) > maxDisks || len(h.NICs) > maxNICs {
		return l // the count fails first; don't walk a huge list
	}
	for i, d := range h.Disks {
		p := "hardware.disks[" + strconv.Itoa(i) + "]"
		l = append(l,
			text(p+".name", d.Name, maxNameBytes),
			text(p+".model", d.Model, maxTextBytes),
			text(p+".serial", d.Serial, maxTextBytes),
			text(p+".vendor", d.Vendor, maxTextBytes),
			text(p+".wwn", d.WWN, maxTextBytes),
			text(p+".by_path", d.ByPath, maxTextBytes),
		)
	}
	for i, n := range h.NICs {
		p := "hardware.nics[" + strconv.Itoa(i) + "]"
		l = append(l,
			text(p+".name", n.Name, maxNameBytes),
			text(p+".mac", n.MAC, maxNameBytes),
			text(p+".driver", n.Driver, maxTextBytes),
			value(p+".speed_mbps", int64(n.SpeedMbps), -1, 10_000_000), // -1: unknown (sysfs)
		)
	}
	return l
}

// checkHardware refuses (400, naming the field) a report over a limit.
func checkHardware(rep *wire.HardwareReport) *httpapi.Error {
	for _, l := range hardwareLimits(rep) {
		if e := l.err(); e != nil {
			return e
		}
	}
	return nil
}

// decodeHardware reads a hardware report of at most MaxHardwareBody bytes
// and checks its limits.
func decodeHardware(w http.ResponseWriter, req *http.Request, rep *wire.HardwareReport) *httpapi.Error {
	if e := httpapi.DecodeLimit(w, req, rep, MaxHardwareBody); e != nil {
		return e
	}
	return checkHardware(rep)
}
