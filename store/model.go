package store

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/agent/wire"
)

// Status is the task lifecycle state (named in agent/wire, which the agent shares).
type Status = wire.Status

// Spec is what the operator asked for: /tasks/{id}/spec.
type Spec struct {
	RegionID          string    `json:"region_id"`
	TargetMAC         string    `json:"target_mac"`
	OSType            string    `json:"os_type"`
	OSVersion         string    `json:"os_version"`
	Hostname          string    `json:"hostname,omitempty"`
	SSHAuthorizedKeys []string  `json:"ssh_authorized_keys,omitempty"`
	UserData          string    `json:"user_data,omitempty"`
	CreatedAt         time.Time `json:"created_at"`

	// RootDeviceHints select the disk to erase (agent/disksel); nil: the
	// smallest fixed disk that holds the image.
	RootDeviceHints *wire.RootDeviceHints `json:"root_device_hints,omitempty"`
	// Network is a static address for the installed system (the seed's
	// network-config); nil: DHCP.
	Network *wire.StaticNetwork `json:"network,omitempty"`
}

// StatusRecord is /tasks/{id}/status.
type StatusRecord struct {
	Status    Status    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	Attempt   int       `json:"attempt"`
}

// Task is one provisioning job with everything known about it.
type Task struct {
	ID       string         `json:"id"`
	Spec     Spec           `json:"spec"`
	Status   StatusRecord   `json:"status"`
	Hardware *wire.Hardware `json:"hardware,omitempty"`
	Progress *wire.Progress `json:"progress,omitempty"`
	Revision int64          `json:"revision"` // etcd mod revision of the status

	TargetDisk *TargetDisk `json:"target_disk,omitempty"`
	// Partitions is the partition table the agent left on disk.
	Partitions *PartitionTable `json:"partitions,omitempty"`

	// BMC is the machine's BMC without its password (store/bmc.go);
	// Power its last polled power state.
	BMC   *BMCInfo    `json:"bmc,omitempty"`
	Power *PowerState `json:"power,omitempty"`
}

// TargetDisk is /tasks/{id}/target-disk: the disk the install erases,
// chosen by the server when the hardware report arrives (from the root-
// device hints, the reported disks and the image size) and possibly
// changed by the operator at approval. The agent gets it in its install
// spec and writes it only if it is still the same disk.
type TargetDisk struct {
	wire.Disk
	ChosenBy    string `json:"chosen_by"`   // "hints", "default" (smallest fixed disk that fits) or "operator"
	Description string `json:"description"` // "/dev/nvme0n1, 480 GB, SAMSUNG ..., serial ..."
}

// Who chose a TargetDisk.
const (
	ChosenByHints    = "hints"
	ChosenByDefault  = "default"
	ChosenByOperator = "operator"
)

// Event is one entry of /tasks/{id}/events/.
type Event struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"` // "status", "stage", "error", "hardware", "auth" (agent credentials)
	From    Status    `json:"from,omitempty"`
	To      Status    `json:"to,omitempty"`
	Stage   string    `json:"stage,omitempty"`
	Message string    `json:"message,omitempty"`
	// Dropped counts the older events dropped past the history limit
	// (Kind "dropped" only).
	Dropped int64 `json:"dropped,omitempty"`
}

// Errors callers map to HTTP statuses.
var (
	ErrNotFound   = errors.New("not found")
	ErrConflict   = errors.New("conflict")
	ErrInvalid    = errors.New("invalid")
	ErrRegression = errors.New("progress regression")
)

// TransitionError says a transition is not allowed from the current status.
type TransitionError struct {
	ID       string
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("task %s is %s: cannot move to %s", e.ID, e.From, e.To)
}

// Is makes a TransitionError match ErrConflict.
func (e *TransitionError) Is(target error) bool { return target == ErrConflict }

// transitions is the state machine of DESIGN.md: to -> allowed from.
var transitions = map[Status][]Status{
	wire.StatusReady:           {wire.StatusPending},
	wire.StatusPendingApproval: {wire.StatusReady},
	wire.StatusApproved:        {wire.StatusPendingApproval},
	wire.StatusInstalling:      {wire.StatusApproved, wire.StatusStalled},
	wire.StatusStalled:         {wire.StatusInstalling},
	wire.StatusCompleted:       {wire.StatusInstalling, wire.StatusStalled},
	wire.StatusFailed:          {wire.StatusPending, wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled},
	wire.StatusCancelled:       {wire.StatusPending, wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled},
	wire.StatusPending:         {wire.StatusFailed, wire.StatusCancelled}, // retry
}

// CanTransition reports whether the state machine allows from -> to.
func CanTransition(from, to Status) bool {
	for _, f := range transitions[to] {
		if f == from {
			return true
		}
	}
	return false
}

// ParseMAC accepts 00:1a:2b:3c:4d:5e, 00-1A-2B-3C-4D-5E and the like and
// returns the canonical lower-case colon form used in every key.
func ParseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%w: %q is not a MAC address like 00:1a:2b:3c:4d:5e", ErrInvalid, s)
	}
	return hw.String(), nil
}

// validName allows the characters safe in a key segment, a hostname and an
// iPXE script: letters, digits, '.', '-', '_'.
func validName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// Validate checks a spec and canonicalizes its MAC.
func (sp *Spec) Validate() error {
	var missing []string
	if sp.RegionID == "" {
		missing = append(missing, "region_id")
	}
	if sp.TargetMAC == "" {
		missing = append(missing, "target_mac")
	}
	if sp.OSType == "" {
		missing = append(missing, "os_type")
	}
	if sp.OSVersion == "" {
		missing = append(missing, "os_version")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing field(s): %s", ErrInvalid, strings.Join(missing, ", "))
	}
	mac, err := ParseMAC(sp.TargetMAC)
	if err != nil {
		return err
	}
	sp.TargetMAC = mac
	for field, v := range map[string]string{"region_id": sp.RegionID, "os_type": sp.OSType, "os_version": sp.OSVersion} {
		if !validName(v, 64) {
			return fmt.Errorf("%w: %s %q: use letters, digits, '.', '-' or '_' (at most 64)", ErrInvalid, field, v)
		}
	}
	if sp.Hostname != "" && !validHostname(sp.Hostname) {
		return fmt.Errorf("%w: hostname %q is not a valid DNS name", ErrInvalid, sp.Hostname)
	}
	for _, k := range sp.SSHAuthorizedKeys {
		if strings.ContainsAny(k, "\r\n") || !strings.HasPrefix(k, "ssh-") && !strings.HasPrefix(k, "ecdsa-") && !strings.HasPrefix(k, "sk-") {
			return fmt.Errorf("%w: ssh_authorized_keys: %q is not one public key line", ErrInvalid, truncate(k, 40))
		}
	}
	if len(sp.UserData) > 64<<10 {
		return fmt.Errorf("%w: user_data is larger than 64 KiB", ErrInvalid)
	}
	if sp.RootDeviceHints != nil {
		if err := disksel.Validate(*sp.RootDeviceHints); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if disksel.IsZero(sp.RootDeviceHints) {
			sp.RootDeviceHints = nil
		}
	}
	if err := validateNetwork(sp.Network, sp.TargetMAC); err != nil {
		return err
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
