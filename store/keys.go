package store

import (
	"fmt"
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

// eventKey orders events by time; the nanosecond stamp is zero-padded so
// etcd's byte order is time order.
func eventKey(id string, at time.Time) string {
	return fmt.Sprintf("%s%020d", eventsPrefix(id), at.UnixNano())
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
