package store

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The key layout of DESIGN.md; every key lpmos writes is built here.
const (
	prefixTasks    = "/tasks/"
	prefixMACIndex = "/index/mac/"
	prefixMachines = "/machines/"
	prefixRegions  = "/regions/"
	prefixImages   = "/images/"
	prefixLeases   = "/leases/"
	keyAdminToken  = "/auth/admin-token-sha256"
	prefixDiscSess = "/discovery-sessions/"
)

func taskPrefix(id string) string    { return prefixTasks + id + "/" }
func specKey(id string) string       { return prefixTasks + id + "/spec" }
func statusKey(id string) string     { return prefixTasks + id + "/status" }
func hardwareKey(id string) string   { return prefixTasks + id + "/hardware" }
func progressKey(id string) string   { return prefixTasks + id + "/progress" }
func bootstrapKey(id string) string  { return prefixTasks + id + "/bootstrap" }
func sessionKey(id string) string    { return prefixTasks + id + "/session" }
func targetDiskKey(id string) string { return prefixTasks + id + "/target-disk" }
func eventsPrefix(id string) string  { return prefixTasks + id + "/events/" }
func macIndexKey(mac string) string  { return prefixMACIndex + mac }
func discoveryKey(mac string) string { return prefixDiscSess + mac }
func machineKey(mac string) string   { return prefixMachines + mac }
func regionKey(id string) string     { return prefixRegions + id }
func leaseKey(mac string) string     { return prefixLeases + mac }
func imageKey(os, ver string) string { return prefixImages + os + "/" + ver }

// Power control (issue 13): the BMC (password sealed, store/bmc.go), the
// polled power state, the lifecycle marks, and the queue of requested
// actions per region (store/power.go).
const (
	prefixPowerRequests = "/power-requests/"
	prefixMachineBMC    = "/machine-bmc/" // a discovered machine's BMC, taken by its next task
)

func machineBMCKey(mac string) string { return prefixMachineBMC + mac }

func bmcKey(id string) string            { return prefixTasks + id + "/bmc" }
func powerKey(id string) string          { return prefixTasks + id + "/power" }
func powerLifecycleKey(id string) string { return prefixTasks + id + "/power-lifecycle" }
func powerRequestsPrefix(region string) string {
	return prefixPowerRequests + region + "/"
}
func powerRequestKey(region, id string, at time.Time) string {
	return fmt.Sprintf("%s%s/%020d", powerRequestsPrefix(region), id, at.UnixNano())
}

// eventKey orders events by time: etcd's byte order of the stamps is
// time order (eventStamp).
func eventKey(id string, at time.Time) string {
	return eventsPrefix(id) + eventStamp(at.UnixNano())
}

// stampDigits are 64 characters in ASCII order.
const stampDigits = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

// eventStamp encodes the nanosecond time ns in 11 characters (until
// events14 it was 20 decimal digits): the top 4 bits as 'a'..'p', then
// 6 bits a character from stampDigits. Byte order is numeric order, and
// every stamp sorts after every decimal one (letters after digits), so a
// task's events written before the upgrade stay first, and the
// dropped-events record (droppedKey, all zeros) stays before all.
func eventStamp(ns int64) string {
	var b [11]byte
	u := uint64(ns)
	for i := 10; i > 0; i-- {
		b[i] = stampDigits[u&63]
		u >>= 6
	}
	b[0] = 'a' + byte(u) // u < 16
	return string(b[:])
}

// parseEventStamp reads an event key's last segment: eventStamp's form or
// the decimal one of before.
func parseEventStamp(s string) (int64, bool) {
	if len(s) == 11 && s[0] >= 'a' && s[0] <= 'p' {
		u := uint64(s[0] - 'a')
		for i := 1; i < 11; i++ {
			d := strings.IndexByte(stampDigits, s[i])
			if d < 0 {
				return 0, false
			}
			u = u<<6 | uint64(d)
		}
		return int64(u), true
	}
	ns, err := strconv.ParseInt(s, 10, 64)
	return ns, err == nil
}

// taskKeyKind splits /tasks/{id}/{kind}[/...] into id and kind.
func taskKeyKind(key string) (id, kind string, ok bool) {
	rest, found := strings.CutPrefix(key, prefixTasks)
	if !found {
		return "", "", false
	}
	id, kind, found = strings.Cut(rest, "/")
	if !found || id == "" {
		return "", "", false
	}
	if strings.HasPrefix(kind, "events/") {
		kind = "events"
	}
	return id, kind, true
}
