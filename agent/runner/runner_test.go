package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/logring"
	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
)

// Tokens of the fake API.
const (
	sessTok = "s_task-1_session"
	discTok = "d_ac1f6b000002_discovery"
)

// fakeAPI is a small agent API: it exchanges a boot token once for a
// session, gives discovered machines a discovery session and hands them a
// task, checks the session on every call (images included), enforces
// increasing seq like the real server, and records what the agent said.
type fakeAPI struct {
	t        *testing.T
	boot     string // the boot token the session exchange accepts once
	image    []byte
	spec     wire.InstallSpec
	handAt   int         // discovery: from this approval poll on, the task is handed over
	status   wire.Status // approval status to answer with
	hwStatus int         // HTTP status for the hardware report (0 = 200)
	revoked  bool        // the session was revoked: every call with it is 401
	hwResp   *wire.HardwareResponse

	mu        sync.Mutex
	exchanges int
	hardware  []wire.HardwareReport
	progress  []wire.Progress
	failures  []wire.FailureReport
	polls     int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == "/images/test.img" {
		if auth != sessTok {
			writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "image needs the session token"})
			return
		}
		http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(f.image))
		return
	}
	if r.URL.Path == wire.PathSession {
		f.exchanges++
		if f.boot == "" || auth != f.boot || f.exchanges > 1 {
			writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "boot token already redeemed"})
			return
		}
		writeJSON(w, 200, wire.SessionResponse{SessionToken: sessTok, TaskID: "task-1", Status: wire.StatusReady})
		return
	}
	discovery := auth == discTok
	if auth != "" && !discovery && (auth != sessTok || f.revoked) {
		writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "agent session revoked"})
		return
	}
	switch {
	case r.URL.Path == wire.PathHardware:
		var rep wire.HardwareReport
		_ = json.NewDecoder(r.Body).Decode(&rep)
		f.hardware = append(f.hardware, rep)
		switch {
		case f.hwStatus != 0:
			writeJSON(w, f.hwStatus, wire.Error{Error: "nope"})
		case auth == "":
			writeJSON(w, 200, wire.HardwareResponse{Discovered: true, SessionToken: discTok})
		case f.hwResp != nil:
			writeJSON(w, 200, f.hwResp)
		default:
			writeJSON(w, 200, wire.HardwareResponse{TaskID: "task-1", Status: wire.StatusPendingApproval})
		}
	case strings.HasPrefix(r.URL.Path, wire.PathApproval):
		f.polls++
		switch {
		case discovery && f.handAt > 0 && f.polls >= f.handAt:
			writeJSON(w, 200, wire.ApprovalResponse{TaskID: "task-1", Status: wire.StatusPendingApproval, SessionToken: sessTok})
		case discovery:
			writeJSON(w, 404, wire.Error{Error: "no task for this MAC yet"})
		case auth == "":
			writeJSON(w, 401, wire.Error{Error: "missing agent session token"})
		default:
			a := wire.ApprovalResponse{TaskID: "task-1", Status: f.status}
			if f.status == wire.StatusApproved {
				a.Approved, a.Install = true, &f.spec
			}
			writeJSON(w, 200, a)
		}
	case auth == "":
		writeJSON(w, 401, wire.Error{Error: "missing agent session token"})
	case r.URL.Path == wire.PathProgress:
		var p wire.Progress
		_ = json.NewDecoder(r.Body).Decode(&p)
		if n := len(f.progress); n > 0 && p.Seq <= f.progress[n-1].Seq {
			writeJSON(w, 409, wire.Error{Error: "progress regression"})
			return
		}
		f.progress = append(f.progress, p)
		writeJSON(w, 200, wire.ProgressResponse{Status: wire.StatusInstalling})
	case r.URL.Path == wire.PathFailure:
		var fr wire.FailureReport
		_ = json.NewDecoder(r.Body).Decode(&fr)
		f.failures = append(f.failures, fr)
		w.WriteHeader(204)
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func newRunner(t *testing.T, f *fakeAPI, boot, disk string) (*Runner, *httptest.Server) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.spec.ImageURL = srv.URL + "/images/test.img"
	ring := logring.New(50)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(ring, testWriter{t}), nil))
	fast := retry.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}
	return &Runner{
		API:       client.New(client.Options{BaseURL: srv.URL, Logger: log, Backoff: fast}),
		BootToken: boot,
		Log:       log,
		Ring:      ring,
		Hardware:  func() (wire.Hardware, error) { return fakeHardware(), nil },
		Disk:      disk,
		Backoff:   fast,
		Install:   install.Options{ProgressInterval: time.Millisecond, Backoff: fast, MaxFailures: 2},
	}, srv
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func fakeHardware() wire.Hardware {
	return wire.Hardware{
		NICs:  []wire.NIC{{Name: "eno2", MAC: "ac:1f:6b:00:00:02", Link: true}, {Name: "eno1", MAC: "ac:1f:6b:00:00:01"}},
		Disks: []wire.Disk{{Name: "sda", SizeBytes: 4 << 40}, {Name: "nvme0n1", SizeBytes: 1 << 40}, {Name: "sdc", SizeBytes: 32 << 30, Removable: true}},
	}
}

// image is an MBR disk image: random bytes up to 1 MiB (compared after
// the install), then one type 0x83 partition holding an ext4 root with
// etc/os-release, where the agent writes its seed.
func image(t *testing.T) ([]byte, string) {
	t.Helper()
	testenv.RequireTool(t, "mkfs.ext4", "e2fsprogs")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "root", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root", "etc", "os-release"), []byte("ID=debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", filepath.Join(dir, "root"), fs, "2048k").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	root, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	clear(b[446:512])
	b[446+4] = 0x83
	binary.LittleEndian.PutUint32(b[446+8:], 2048)
	binary.LittleEndian.PutUint32(b[446+12:], uint32(len(root)/512))
	b[510], b[511] = 0x55, 0xaa
	b = append(b, root...)
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

func TestRun(t *testing.T) {
	img, sum := image(t)
	tests := []struct {
		name          string
		api           *fakeAPI
		token         string // the agent's boot token
		disk          bool
		wantErr       string
		wantStop      bool
		wantBootAgain bool
		wantCompleted bool
		wantFailure   string // substring of the failure report's reason
		wantHardware  int    // hardware reports (0: 1)
		wantManaged   bool   // Runner.PowerManaged after Run
	}{
		{
			name: "install to a file disk", token: "b1", disk: true, wantCompleted: true,
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved,
				spec: wire.InstallSpec{ImageSHA256: sum, ImageSize: int64(len(img)), ImageFormat: "raw", Hostname: "h1"}},
		},
		{
			name: "power-managed machine: the region reboots it", token: "b1", disk: true, wantCompleted: true, wantManaged: true,
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved,
				spec: wire.InstallSpec{ImageSHA256: sum, ImageSize: int64(len(img)), ImageFormat: "raw", PowerManaged: true}},
		},
		{
			name: "demo: no disk", token: "b1", wantCompleted: true,
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved,
				spec: wire.InstallSpec{ImageSHA256: sum, ImageSize: int64(len(img)), ImageFormat: "raw"}},
		},
		{
			name: "discovered machine is handed its task without a reboot", disk: true, wantCompleted: true, wantHardware: 2,
			api: &fakeAPI{image: img, status: wire.StatusApproved, handAt: 4,
				spec: wire.InstallSpec{ImageSHA256: sum, ImageSize: int64(len(img))}},
		},
		{
			name: "discovered machine whose MAC has a task: boot again", disk: true, wantErr: "boot again", wantBootAgain: true,
			api: &fakeAPI{image: img, status: wire.StatusApproved, hwStatus: 401},
		},
		{
			name: "corrupted image is reported as failed", token: "b1", disk: true, wantErr: "checksum mismatch", wantFailure: "checksum mismatch",
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved,
				spec: wire.InstallSpec{ImageSHA256: strings.Repeat("0", 64), ImageSize: int64(len(img))}},
		},
		{
			name: "boot token refused", token: "stale", disk: true, wantErr: "already redeemed", wantBootAgain: true, wantHardware: -1,
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved},
		},
		{
			name: "session revoked", token: "b1", disk: true, wantErr: "revoked", wantBootAgain: true, wantHardware: -1,
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved, revoked: true},
		},
		{
			name: "cancelled while waiting", token: "b1", disk: true, wantErr: "task task-1 is cancelled", wantStop: true,
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusCancelled},
		},
		{
			name: "hardware report rejected", token: "b1", disk: true, wantErr: "HTTP 400",
			api: &fakeAPI{boot: "b1", image: img, status: wire.StatusApproved, hwStatus: 400},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			api := tt.api
			api.t = t
			disk := ""
			if tt.disk {
				disk = filepath.Join(t.TempDir(), "disk.img")
				if err := os.WriteFile(disk, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(disk, 4<<20); err != nil {
					t.Fatal(err)
				}
			}
			r, _ := newRunner(t, api, tt.token, disk)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := r.Run(ctx)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Run err = %v, want %q", err, tt.wantErr)
			}
			if r.PowerManaged != tt.wantManaged {
				t.Errorf("PowerManaged = %v, want %v", r.PowerManaged, tt.wantManaged)
			}
			if tt.wantBootAgain != errors.As(err, new(*BootAgainError)) {
				t.Errorf("BootAgainError = %v, want %v", !tt.wantBootAgain, tt.wantBootAgain)
			}
			if tt.wantStop != errors.As(err, new(*StopError)) {
				t.Errorf("StopError = %v, want %v", !tt.wantStop, tt.wantStop)
			}

			api.mu.Lock()
			defer api.mu.Unlock()
			if len(api.hardware) > 0 && api.hardware[0].MACAddress != "ac:1f:6b:00:00:02" {
				t.Errorf("reported as %q, want the NIC with a link", api.hardware[0].MACAddress)
			}
			if want := max(tt.wantHardware, 0) + map[bool]int{true: 1}[tt.wantHardware == 0]; len(api.hardware) != want {
				t.Errorf("%d hardware reports, want %d", len(api.hardware), want)
			}
			if tt.token != "" && api.exchanges != 1 {
				t.Errorf("%d boot token exchanges, want 1", api.exchanges)
			}
			completed := false
			for i, p := range api.progress {
				if p.TaskID != "task-1" || i > 0 && p.Seq <= api.progress[i-1].Seq {
					t.Errorf("progress %d: %+v (seq must increase)", i, p)
				}
				// A rebooted agent must sort after an earlier one: seq
				// follows the clock.
				if p.Seq < start.Add(-2*time.Second).UnixMicro() {
					t.Errorf("progress %d: seq %d is before the run started", i, p.Seq)
				}
				if p.Stage == wire.StageCompleted {
					completed = true
					if i != len(api.progress)-1 || p.Percentage != 100 {
						t.Errorf("completed is not the last report at 100%%: %+v", p)
					}
				}
			}
			if completed != tt.wantCompleted {
				t.Errorf("completed reported = %v, want %v (%d reports)", completed, tt.wantCompleted, len(api.progress))
			}
			switch {
			case tt.wantFailure == "" && len(api.failures) > 0:
				t.Errorf("unexpected failure report %+v", api.failures)
			case tt.wantFailure != "":
				if len(api.failures) != 1 || !strings.Contains(api.failures[0].Reason, tt.wantFailure) || api.failures[0].TaskID != "task-1" {
					t.Fatalf("failure reports %+v, want one mentioning %q", api.failures, tt.wantFailure)
				}
				if n := len(api.failures[0].LogLines); n < 3 || n > 50 || !strings.Contains(strings.Join(api.failures[0].LogLines, "\n"), "stage=downloading") {
					t.Errorf("failure report carries %d log lines: %q", n, api.failures[0].LogLines)
				}
			}
			if tt.disk && !tt.wantCompleted {
				b, _ := os.ReadFile(disk)
				if !bytes.Equal(b[:4096], make([]byte, 4096)) {
					t.Error("a failed install left the image start on the disk")
				}
			}
			if tt.disk && tt.wantCompleted {
				b, _ := os.ReadFile(disk)
				// The root file system after 1 MiB now holds the seed.
				if !bytes.Equal(b[:1<<20], img[:1<<20]) {
					t.Error("disk does not hold the image")
				}
				// The partition table left on disk reaches the server.
				var table string
				for _, p := range api.progress {
					for _, pt := range p.Partitions {
						table += fmt.Sprintf("%d:%s:%s:%s ", pt.Number, pt.Type, pt.FS, pt.Role)
					}
				}
				if table != "1:0x83:ext4:root " {
					t.Errorf("partitions reported: %q", table)
				}
			}
		})
	}
}

// PID-1 mode: the agent writes the disk the server chose, after checking
// it is still that disk; a mismatch fails the task before anything is
// written; an older server (no target) gets the smallest fixed disk.
func TestRunTargetDisk(t *testing.T) {
	img, sum := image(t)
	hwDisks := []wire.Disk{
		{Name: "sda", SizeBytes: 4 << 40, Serial: "HDD1", WWN: "naa.5000c500a1b2c3d4", Rotational: true},
		{Name: "nvme0n1", SizeBytes: 1 << 40, Serial: "S4EMNX0R123456", WWN: "eui.0025388b91c0ffee"},
		{Name: "sdc", SizeBytes: 32 << 30, Removable: true},
	}
	tests := []struct {
		name        string
		target      *wire.Disk
		cmdline     string // r.Disk: lpmos_disk= wins
		wantWritten string // file in DevDir holding the image; "" = nothing written
		wantFailure string
	}{
		{name: "server's choice", target: &hwDisks[0], wantWritten: "sda"},
		{name: "older server: smallest fixed disk", wantWritten: "nvme0n1"},
		{name: "kernel line wins", target: &hwDisks[0], cmdline: "sdc", wantWritten: "sdc"},
		{name: "another disk under that name", wantFailure: "not the disk chosen before approval",
			target: &wire.Disk{Name: "sda", SizeBytes: 4 << 40, Serial: "HDD2", WWN: "naa.5000c500ffffffff"}},
		{name: "same serial, other size", wantFailure: "size",
			target: &wire.Disk{Name: "nvme0n1", SizeBytes: 2 << 40, Serial: "S4EMNX0R123456"}},
		{name: "renumbered: the chosen disk is now another name", wantFailure: "that disk is now /dev/nvme0n1",
			target: &wire.Disk{Name: "sda", SizeBytes: 1 << 40, Serial: "S4EMNX0R123456", WWN: "eui.0025388b91c0ffee"}},
		{name: "disk gone", wantFailure: "is not attached now",
			target: &wire.Disk{Name: "sdd", SizeBytes: 4 << 40, Serial: "HDD9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := t.TempDir()
			for _, d := range hwDisks {
				if err := os.WriteFile(filepath.Join(dev, d.Name), make([]byte, 4<<20), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			api := &fakeAPI{t: t, boot: "b1", image: img, status: wire.StatusApproved,
				spec: wire.InstallSpec{ImageSHA256: sum, ImageSize: int64(len(img)), ImageFormat: "raw", TargetDisk: tt.target}}
			r, _ := newRunner(t, api, "b1", "")
			r.Hardware = func() (wire.Hardware, error) { h := fakeHardware(); h.Disks = hwDisks; return h, nil }
			r.AutoDisk, r.DevDir = true, dev
			if tt.cmdline != "" {
				r.Disk = filepath.Join(dev, tt.cmdline)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := r.Run(ctx)
			if tt.wantFailure == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if tt.wantFailure != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantFailure) {
					t.Fatalf("Run = %v, want %q", err, tt.wantFailure)
				}
				api.mu.Lock()
				if len(api.failures) != 1 || !strings.Contains(api.failures[0].Reason, tt.wantFailure) {
					t.Errorf("failure reports %+v, want one mentioning %q", api.failures, tt.wantFailure)
				}
				api.mu.Unlock()
			}
			for _, d := range hwDisks {
				b, _ := os.ReadFile(filepath.Join(dev, d.Name))
				// The image's MBR and GPT partition array (LBA 0 and 2-33):
				// the headers and the root file system change on install
				// (backup GPT moved, NoCloud seed written).
				has := bytes.Equal(b[:446], img[:446]) && bytes.Equal(b[1024:17408], img[1024:17408])
				if has != (d.Name == tt.wantWritten) {
					t.Errorf("%s holds the image: %v, want only %q written", d.Name, has, tt.wantWritten)
				}
				if !has && !bytes.Equal(b, make([]byte, 4<<20)) {
					t.Errorf("%s was touched", d.Name)
				}
			}
		})
	}
}

// The server failed the task on the hardware report (no disk matches the
// hints): the agent stops at once with the reason, never asks to install.
func TestRunFailedOnHardware(t *testing.T) {
	img, _ := image(t)
	api := &fakeAPI{t: t, boot: "b1", image: img, status: wire.StatusApproved, hwResp: &wire.HardwareResponse{
		TaskID: "task-1", Status: wire.StatusFailed, Reason: "no disk matches root_device_hints {serial=X}; disks: ..."}}
	r, _ := newRunner(t, api, "b1", "")
	r.AutoDisk, r.DevDir = true, t.TempDir()
	err := r.Run(context.Background())
	var stop *StopError
	if !errors.As(err, &stop) || stop.Status != wire.StatusFailed || !strings.Contains(err.Error(), "no disk matches") {
		t.Fatalf("Run = %v, want a StopError with the reason", err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.polls != 0 || len(api.progress) != 0 || len(api.failures) != 0 {
		t.Errorf("after the failed hardware report: %d polls, %d progress, %d failures; want none", api.polls, len(api.progress), len(api.failures))
	}
}

func TestBootMAC(t *testing.T) {
	tests := []struct {
		nics []wire.NIC
		want string
	}{
		{nics: fakeHardware().NICs, want: "ac:1f:6b:00:00:02"},
		{nics: []wire.NIC{{Name: "b", MAC: "00:00:00:00:00:0b"}, {Name: "a", MAC: "00:00:00:00:00:0a"}}, want: "00:00:00:00:00:0a"},
		{nics: nil, want: ""},
	}
	for _, tt := range tests {
		if got := BootMAC(tt.nics); got != tt.want {
			t.Errorf("BootMAC = %q, want %q", got, tt.want)
		}
	}
}
