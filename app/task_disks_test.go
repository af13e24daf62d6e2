package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/hw"
	"github.com/lpmos/lpmos/agent/wire"
)

// `lpmos task create --root-device` and `lpmos task approve --disk`
// against a real `lpmos serve`, with the four-disk fixture reported
// through the agent API.
func TestCLIRootDeviceAndApproveDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir)
	p.waitHealthy(t, 30*time.Second)
	img := filepath.Join(dir, "images", "ubuntu.img") // <data-dir>/images, the default --images-dir
	if err := os.MkdirAll(filepath.Dir(img), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, bytes.Repeat([]byte("lpmos disk test\n"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.cli(t, "image", "add", "ubuntu", "22.04", img); err != nil {
		t.Fatalf("image add: %v", err)
	}
	agentAPI := fmt.Sprintf("http://127.0.0.1:%d", p.ports[1])
	const mac = "52:54:00:d1:5c:01"

	for arg, msg := range map[string]string{
		"size=100G":                 "unknown key",
		"min-size=2T,max-size=1T":   "min_size_bytes",
		"name=/dev/disk/by-id/wwn1": "use by_path",
		"rotational=maybe":          "rotational",
	} {
		_, err := p.cli(t, "task", "create", "--mac", mac, "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image", "--root-device", arg)
		if err == nil || !strings.Contains(err.Error(), "--root-device") || !strings.Contains(err.Error(), msg) {
			t.Errorf("--root-device %s: %v, want an error mentioning %q", arg, err, msg)
		}
	}
	if out, _ := p.cli(t, "task", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("refused creates left tasks: %s", out)
	}

	out, err := p.cli(t, "task", "create", "--mac", mac, "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image", "--root-device", "model=SAMSUNG MZQLB480HAJQ-00007,min-size=400G", "-o", "json")
	if err != nil {
		t.Fatalf("task create: %v", err)
	}
	var task struct {
		ID   string
		Spec struct {
			RootDeviceHints *wire.RootDeviceHints `json:"root_device_hints"`
		}
	}
	if err := json.Unmarshal([]byte(out), &task); err != nil || task.Spec.RootDeviceHints == nil || task.Spec.RootDeviceHints.MinSizeBytes != 400e9 {
		t.Fatalf("created: %s (%v)", out, err)
	}

	// The agent's hardware report, with the token of the iPXE script.
	var script string
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(script, "lpmos_token=") && time.Now().Before(deadline) {
		resp, err := http.Get(agentAPI + "/boot/" + mac + ".ipxe")
		if err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			script = b.String()
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok := regexp.MustCompile(`lpmos_token=([A-Za-z0-9_-]+)`).FindStringSubmatch(script)
	if tok == nil {
		t.Fatalf("no token in the boot script:\n%s", script)
	}
	// The agent's first call exchanges the script's boot token for its session.
	sbody, _ := json.Marshal(wire.SessionRequest{MACAddress: mac, TaskID: task.ID})
	sreq, _ := http.NewRequest("POST", agentAPI+wire.PathSession, bytes.NewReader(sbody))
	sreq.Header.Set("Authorization", "Bearer "+tok[1])
	sreq.Header.Set("Content-Type", "application/json")
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	var sess wire.SessionResponse
	derr := json.NewDecoder(sresp.Body).Decode(&sess)
	sresp.Body.Close()
	if sresp.StatusCode != 200 || derr != nil || sess.SessionToken == "" {
		t.Fatalf("session exchange: %d %+v (%v)", sresp.StatusCode, sess, derr)
	}
	disks, err := hw.Disks(filepath.Join("..", "testdata", "agent", "disks4"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.HardwareReport{MACAddress: mac, TaskID: task.ID, Hardware: wire.Hardware{BootMode: "uefi", Disks: disks}})
	req, _ := http.NewRequest("POST", agentAPI+wire.PathHardware, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+sess.SessionToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("hardware report: %d", resp.StatusCode)
	}

	out, err = p.cli(t, "task", "get", task.ID)
	if err != nil || !strings.Contains(out, "pending_approval") ||
		!strings.Contains(out, "target disk (chosen by hints): /dev/nvme0n1, 480 GB, SAMSUNG MZQLB480HAJQ-00007, serial S4EMNX0R123456") ||
		!strings.Contains(out, "root device hints: {model=SAMSUNG MZQLB480HAJQ-00007,min-size=400000000000}") {
		t.Fatalf("task get before approval (%v):\n%s", err, out)
	}
	if _, err := p.cli(t, "task", "approve", task.ID, "--disk", "sdz"); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "no disk matches") {
		t.Fatalf("approve --disk sdz: %v", err)
	}
	out, err = p.cli(t, "task", "approve", task.ID, "--disk", "ZC1A2B3C")
	if err != nil || !strings.Contains(out, "approved") || !strings.Contains(out, "target disk (chosen by operator): /dev/sdb, 4.0 TB") {
		t.Fatalf("approve --disk ZC1A2B3C (%v):\n%s", err, out)
	}
}
