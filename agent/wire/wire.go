// Package wire holds every JSON type that crosses the wire between the
// lpmos agent and the regional agent API, plus the task statuses both sides
// name. It imports the standard library only: the agent links it.
package wire

import "time"

// Status is the lifecycle state of a task. The store owns the transitions;
// this package only names the states so the agent and the server agree.
type Status string

// The task states of DESIGN.md.
const (
	StatusPending         Status = "pending"
	StatusReady           Status = "ready"
	StatusPendingApproval Status = "pending_approval"
	StatusApproved        Status = "approved"
	StatusInstalling      Status = "installing"
	StatusStalled         Status = "stalled"
	StatusCompleted       Status = "completed"
	StatusFailed          Status = "failed"
	StatusCancelled       Status = "cancelled"
)

// AllStatuses lists every status in lifecycle order.
var AllStatuses = []Status{
	StatusPending, StatusReady, StatusPendingApproval, StatusApproved,
	StatusInstalling, StatusStalled, StatusCompleted, StatusFailed, StatusCancelled,
}

// Active reports whether a task in this status still owns its MAC.
func (s Status) Active() bool {
	switch s {
	case StatusPending, StatusReady, StatusPendingApproval, StatusApproved, StatusInstalling, StatusStalled:
		return true
	}
	return false
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	for _, v := range AllStatuses {
		if s == v {
			return true
		}
	}
	return false
}

// Install stages and the percentage range each one covers (the seed's).
const (
	StagePartitioning = "partitioning" // 0-20
	StageDownloading  = "downloading"  // 20-60
	StageInstalling   = "installing"   // 60-90
	StageConfiguring  = "configuring"  // 90-100
	StageCompleted    = "completed"    // 100: the install is done
)

// StageIndex is stage's place in the order an install goes through the
// stages (partitioning 0 ... completed 4), or -1 for an unknown stage.
func StageIndex(stage string) int {
	switch stage {
	case StagePartitioning:
		return 0
	case StageDownloading:
		return 1
	case StageInstalling:
		return 2
	case StageConfiguring:
		return 3
	case StageCompleted:
		return 4
	}
	return -1
}

// Hardware is the agent's hardware report.
type Hardware struct {
	CPU         CPU       `json:"cpu"`
	Memory      Memory    `json:"memory"`
	Disks       []Disk    `json:"disks"`
	NICs        []NIC     `json:"nics"`
	DMI         DMI       `json:"dmi"`
	BootMode    string    `json:"boot_mode"` // "uefi" or "bios"
	Hostname    string    `json:"hostname,omitempty"`
	Kernel      string    `json:"kernel,omitempty"`
	CollectedAt time.Time `json:"collected_at"`
}

// CPU describes the processors.
type CPU struct {
	Model   string `json:"model"`
	Sockets int    `json:"sockets"`
	Cores   int    `json:"cores"`   // physical cores, all sockets
	Threads int    `json:"threads"` // logical CPUs
}

// Memory describes the installed memory.
type Memory struct {
	TotalBytes uint64 `json:"total_bytes"`
	TotalGB    int    `json:"total_gb"`
}

// Disk is one block device (loop and ram devices are skipped).
type Disk struct {
	Name       string `json:"name"`
	SizeBytes  uint64 `json:"size_bytes"`
	Model      string `json:"model,omitempty"`
	Vendor     string `json:"vendor,omitempty"` // SCSI/ATA vendor ("ATA" for SATA disks); empty for NVMe/virtio
	Serial     string `json:"serial,omitempty"`
	WWN        string `json:"wwn,omitempty"`     // the kernel's wwid: "naa.5000c500...", "eui.3433...", "t10.ATA ..."
	ByPath     string `json:"by_path,omitempty"` // udev path_id name (/dev/disk/by-path/<by_path>), e.g. "pci-0000:00:17.0-ata-1.0"
	Rotational bool   `json:"rotational"`
	Removable  bool   `json:"removable"`
}

// RootDeviceHints select the disk an install erases, Ironic-style. Every
// hint that is set must match (AND); string hints compare exactly, ignoring
// case and surrounding blanks (see agent/disksel). With no hint set, the
// smallest fixed disk that holds the image is used.
type RootDeviceHints struct {
	Name         string `json:"name,omitempty"`           // "sda" or "/dev/sda"
	Serial       string `json:"serial,omitempty"`         // exact
	WWN          string `json:"wwn,omitempty"`            // "naa.5000c500a1b2c3d0" or "0x5000c500a1b2c3d0"
	Model        string `json:"model,omitempty"`          // exact, e.g. "SAMSUNG MZQLB960HAJR-00007"
	Vendor       string `json:"vendor,omitempty"`         // exact, e.g. "ATA"
	ByPath       string `json:"by_path,omitempty"`        // "pci-0000:00:17.0-ata-1" or "/dev/disk/by-path/pci-..."
	MinSizeBytes uint64 `json:"min_size_bytes,omitempty"` // disk size >= this
	MaxSizeBytes uint64 `json:"max_size_bytes,omitempty"` // disk size <= this
	Rotational   *bool  `json:"rotational,omitempty"`     // true: spinning disks only; false: SSD/NVMe only
}

// NIC is one network interface.
type NIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac"`
	Driver    string `json:"driver,omitempty"`
	SpeedMbps int    `json:"speed_mbps,omitempty"`
	Link      bool   `json:"link"`
}

// DMI is the SMBIOS identity of the machine.
type DMI struct {
	Vendor      string `json:"vendor,omitempty"`
	Product     string `json:"product,omitempty"`
	Serial      string `json:"serial,omitempty"`
	UUID        string `json:"uuid,omitempty"`
	BIOSVendor  string `json:"bios_vendor,omitempty"`
	BIOSVersion string `json:"bios_version,omitempty"`
	BIOSDate    string `json:"bios_date,omitempty"`
}

// HardwareReport is the body of POST /api/v1/agent/hardware.
// TaskID is empty when the machine booted without a task (discovery).
type HardwareReport struct {
	MACAddress string   `json:"mac_address"`
	TaskID     string   `json:"task_id,omitempty"`
	Hardware   Hardware `json:"hardware"`
}

// HardwareResponse answers a hardware report.
type HardwareResponse struct {
	TaskID     string `json:"task_id,omitempty"`
	Status     Status `json:"status,omitempty"`
	Discovered bool   `json:"discovered"` // recorded as a machine without a task
	// SessionToken is the discovery session of a machine without a task:
	// the agent long-polls approval with it until a task is handed over.
	SessionToken string `json:"session_token,omitempty"`

	Reason string `json:"reason,omitempty"` // why the task failed (e.g. no disk matches its hints)
}

// SessionRequest is the body of POST /api/v1/agent/session, sent with the
// boot token (lpmos_token) as bearer: the agent's first call exchanges it,
// once, for the session token it uses from then on.
type SessionRequest struct {
	MACAddress string `json:"mac_address"`
	TaskID     string `json:"task_id"`
}

// SessionResponse answers a session request.
type SessionResponse struct {
	SessionToken string `json:"session_token"`
	TaskID       string `json:"task_id"`
	Status       Status `json:"status"`
}

// Progress is the body of POST /api/v1/agent/progress and the record kept
// under /tasks/{id}/progress. Seq increases with every report of one attempt;
// a repeated Seq is a duplicate (ignored), a lower one a regression (refused).
type Progress struct {
	MACAddress string    `json:"mac_address,omitempty"`
	TaskID     string    `json:"task_id"`
	Seq        int64     `json:"seq"`
	Stage      string    `json:"stage"`
	Percentage int       `json:"percentage"`
	Message    string    `json:"message,omitempty"`
	BytesDone  int64     `json:"bytes_done,omitempty"`
	BytesTotal int64     `json:"bytes_total,omitempty"`
	Attempt    int       `json:"attempt,omitempty"`    // filled in by the server
	Run        int       `json:"run,omitempty"`        // filled in by the server: the agent session's run
	UpdatedAt  time.Time `json:"updated_at,omitempty"` // filled in by the server

	// Partitions is the partition table the agent left on disk, sent with
	// the last configuring report; the server keeps it under
	// /tasks/{id}/partitions.
	Partitions []Partition `json:"partitions,omitempty"`
}

// Partition is one partition of the table an install left on disk.
type Partition struct {
	Number     int    `json:"number"` // 1-based, as in /dev/vda1
	Name       string `json:"name,omitempty"`
	Type       string `json:"type"` // GPT type GUID (upper case), or MBR type "0x83"
	StartBytes int64  `json:"start_bytes"`
	SizeBytes  int64  `json:"size_bytes"`
	FS         string `json:"fs,omitempty"`   // ext4, xfs, btrfs, vfat, swap, lvm2, ... as found
	Role       string `json:"role,omitempty"` // root, boot, esp, bios_boot, swap, lvm
}

// ProgressResponse answers a progress report.
type ProgressResponse struct {
	Status    Status `json:"status"`
	Duplicate bool   `json:"duplicate,omitempty"`
	// NextReportMS, when set, is the interval the region asks the agent to
	// keep between its within-stage reports (it is loaded); stage changes
	// are still reported at once.
	NextReportMS int64 `json:"next_report_ms,omitempty"`
}

// FailureReport is the body of POST /api/v1/agent/failure: the agent gives up
// on the install and says why, with the last lines of its log.
type FailureReport struct {
	MACAddress string   `json:"mac_address,omitempty"`
	TaskID     string   `json:"task_id"`
	Reason     string   `json:"reason"`
	LogLines   []string `json:"log_lines,omitempty"`
}

// ApprovalResponse answers GET /api/v1/agent/approval/{mac}. Install is set
// once the task is approved (or already installing).
type ApprovalResponse struct {
	TaskID   string       `json:"task_id"`
	Status   Status       `json:"status"`
	Approved bool         `json:"approved"`
	Reason   string       `json:"reason,omitempty"`
	Install  *InstallSpec `json:"install,omitempty"`
	// SessionToken hands the polling agent a task and a session for it: a
	// discovered machine's task was created, or its ended task was
	// retried. The agent uses it from then on (and reports its hardware).
	SessionToken string `json:"session_token,omitempty"`
}

// InstallSpec is what the agent writes to disk and how it configures it.
type InstallSpec struct {
	OSType            string   `json:"os_type"`
	OSVersion         string   `json:"os_version"`
	ImageURL          string   `json:"image_url"`    // absolute URL, served by the region with Range
	ImageSHA256       string   `json:"image_sha256"` // hex, of the bytes written to disk
	ImageSize         int64    `json:"image_size"`   // bytes written to disk
	ImageFormat       string   `json:"image_format"` // "raw" or "gzip" (of the served file)
	Hostname          string   `json:"hostname,omitempty"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`
	UserData          string   `json:"user_data,omitempty"`
	// TargetDisk is the disk the server chose (root-device hints, or the
	// operator at approval). The agent writes it only if the disk it finds
	// under that name is still the same (wwn, serial, size). Absent from
	// older servers: the agent then chooses itself.
	TargetDisk *Disk `json:"target_disk,omitempty"`

	// Network is the task's static address, written as the seed's
	// network-config; nil leaves the installed OS on DHCP.
	Network *StaticNetwork `json:"network,omitempty"`

	// PowerManaged: the region controls this machine through its BMC and
	// reboots it (to disk) once the install completed, so the agent does
	// not reboot by itself: it syncs and waits.
	PowerManaged bool `json:"power_managed,omitempty"`
}

// StaticNetwork is a static address for the installed system's NIC.
type StaticNetwork struct {
	Address string   `json:"address"`           // CIDR, e.g. 10.0.0.5/24 or 2001:db8::5/64
	Gateway string   `json:"gateway,omitempty"` // default route, inside Address's subnet
	DNS     []string `json:"dns,omitempty"`     // name servers
	MAC     string   `json:"mac,omitempty"`     // NIC to configure; default the task's target MAC
}

// Error is the JSON body of every error answer.
type Error struct {
	Error string `json:"error"`
	// ResendFrom, on a 409 to a progress report, says the server holds
	// less of this run than the report follows from: reports it answered
	// were lost before they were stored (a region restart). The agent
	// sends again its last report of each stage from this one on, then
	// the refused report.
	ResendFrom string `json:"resend_from,omitempty"`
}

// Kernel command line parameters the iPXE script passes to the agent.
const (
	ParamServer = "lpmos_client" // base URL of the regional agent API
	ParamTaskID = "lpmos_task"
	ParamToken  = "lpmos_token" // the boot token: exchanged once at PathSession
	ParamMAC    = "lpmos_mac"
	// Added for the agent: optional target disk (e.g. /dev/vda; the agent
	// picks the smallest fixed disk that fits the image when absent) and
	// power off instead of reboot at the end ("1"), which qemu tests use.
	ParamDisk     = "lpmos_disk"
	ParamPowerOff = "lpmos_poweroff"
	// ParamCA pins the cluster CA the agent API's HTTPS certificate must
	// chain to: "sha256:" + the hex sha256 of the CA certificate's DER.
	ParamCA = "lpmos_ca"
)

// CAPinPrefix starts every ParamCA value.
const CAPinPrefix = "sha256:"

// Agent API paths (on the regional --api-port).
const (
	PathSession  = "/api/v1/agent/session"
	PathHardware = "/api/v1/agent/hardware"
	PathProgress = "/api/v1/agent/progress"
	PathApproval = "/api/v1/agent/approval/" // + MAC
	PathFailure  = "/api/v1/agent/failure"
	PathImages   = "/images/" // + os/version
)
