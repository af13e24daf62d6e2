package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/install"
	"github.com/lpmos/lpmos/agent/runner"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// tlsRegion runs a region that listens itself (Start with Addr) with a
// serving certificate from the store's cluster CA: TLS and plain HTTP on
// one port. It returns the https and http base URLs and the CA pin.
func tlsRegion(t *testing.T, st *store.Store, id string) (r *Region, httpsURL, httpURL, pin string) {
	t.Helper()
	cert, pin, err := st.IssueAgentAPICert(context.Background(), "test-region", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", storetest.FreePort(t))
	boot := t.TempDir()
	for name, data := range map[string]string{"vmlinuz": "KERNEL-0123456789abcdef", "initramfs.img": "INITRAMFS"} {
		if err := os.WriteFile(filepath.Join(boot, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err = New(Config{
		Store: st, RegionID: id, Addr: addr, PublicURL: "https://" + addr,
		TLSCert: cert, CAPin: pin,
		BootDir: boot, DiscoverUnknown: true, PollInterval: 50 * time.Millisecond,
		Images: imagesrc.Policy{Dir: os.TempDir(), AllowLocalURLs: true},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tr := &testRegion{Region: r, st: st}
	tr.start(t)
	waitFor(t, 10*time.Second, "agent API listening", func() bool { return r.State()[ServiceAgentAPI].State == StateRunning })
	return r, "https://" + addr, "http://" + addr, pin
}

// TestAgentAPITLSAndPlainBoot: on the one port, plain HTTP serves iPXE's
// /boot/* (with the https agent URL and the CA pin on the kernel line) and
// refuses the agent API and images with a JSON error; HTTPS with the
// pinned CA serves the agent API.
func TestAgentAPITLSAndPlainBoot(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	addImage(t, st, "ubuntu", "22.04", make([]byte, 1000))
	_, httpsURL, httpURL, pin := tlsRegion(t, st, "dc1")
	task := createTask(t, st, "dc1")
	waitStatus(t, st, task.ID, wire.StatusReady)

	code, script := getText(t, httpURL+"/boot/"+task.Spec.TargetMAC+".ipxe")
	if code != 200 {
		t.Fatalf("plain GET of the iPXE script: %d %s", code, script)
	}
	for _, want := range []string{
		"kernel " + httpURL + "/boot/files/vmlinuz ",
		" lpmos_client=" + httpsURL + " ",
		" lpmos_ca=sha256:" + pin + " ",
		"initrd --name initrd " + httpURL + "/boot/files/initramfs.img ",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	if code, body := getText(t, httpURL+"/boot/files/vmlinuz"); code != 200 || body != "KERNEL-0123456789abcdef" {
		t.Errorf("plain GET of the kernel: %d %q", code, body)
	}

	plain := []struct{ method, path string }{
		{"POST", wire.PathSession},
		{"POST", wire.PathHardware},
		{"POST", wire.PathProgress},
		{"POST", wire.PathFailure},
		{"GET", wire.PathApproval + task.Spec.TargetMAC},
		{"GET", wire.PathImages + "ubuntu/22.04"},
	}
	for _, p := range plain {
		t.Run("plain "+p.method+" "+p.path, func(t *testing.T) {
			var e wire.Error
			code := call(t, p.method, httpURL+p.path, "", map[string]string{"mac_address": task.Spec.TargetMAC}, &e)
			if code != http.StatusForbidden {
				t.Fatalf("plain %s %s = %d, want 403", p.method, p.path, code)
			}
			if !strings.Contains(e.Error, "https") || !strings.Contains(e.Error, pin) {
				t.Fatalf("error %q does not say to use https and name the pin", e.Error)
			}
		})
	}

	hc, err := client.PinnedHTTPClient(wire.CAPinPrefix + pin)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(client.Options{BaseURL: httpsURL, HTTPClient: hc, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.ReportHardware(ctx, wire.HardwareReport{MACAddress: "52:54:00:77:00:01", Hardware: wire.Hardware{BootMode: "bios"}}); err != nil {
		t.Fatalf("discovery report over HTTPS: %v", err)
	}
	resp, err := hc.Get(httpsURL + "/boot/files/initramfs.img")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(data) != "INITRAMFS" {
		t.Errorf("HTTPS GET of the initramfs: %d %q", resp.StatusCode, data)
	}
}

// TestRealAgentOverTLS runs the agent's own flow with the parameters of
// the kernel line (lpmos_client=https://..., lpmos_ca=sha256:...): a wrong
// pin is refused before anything is sent, the right one installs.
func TestRealAgentOverTLS(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	addImage(t, st, "ubuntu", "22.04", make([]byte, 300_000))
	_, _, httpURL, _ := tlsRegion(t, st, "dc1")
	task := createTask(t, st, "dc1")
	waitStatus(t, st, task.ID, wire.StatusReady)

	_, script := getText(t, httpURL+"/boot/"+task.Spec.TargetMAC+".ipxe")
	m := regexp.MustCompile(`lpmos_client=(\S+) lpmos_ca=(\S+) lpmos_task=(\S+) lpmos_token=(\S+) `).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no agent parameters in script:\n%s", script)
	}
	agent := func(pin string) *runner.Runner {
		hc, err := client.PinnedHTTPClient(pin)
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(testLog{t}, nil))
		return &runner.Runner{
			API:          client.New(client.Options{BaseURL: m[1], Logger: log, HTTPClient: hc}),
			ImageClient:  hc,
			BootToken:    m[4],
			Log:          log,
			Hardware:     func() (wire.Hardware, error) { return wire.Hardware{BootMode: "bios", CPU: wire.CPU{Threads: 2}}, nil },
			MAC:          task.Spec.TargetMAC,
			TaskID:       m[3],
			ApprovalWait: 5 * time.Second,
			Install:      install.Options{ProgressInterval: time.Millisecond},
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	wrong := wire.CAPinPrefix + strings.Repeat("00", 32)
	err := agent(wrong).Run(ctx)
	var pe *client.PinError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("agent with a wrong pin: %v, want a PinError naming the pin", err)
	}

	done := make(chan error, 1)
	go func() { done <- agent(m[2]).Run(ctx) }()
	waitStatus(t, st, task.ID, wire.StatusPendingApproval)
	if _, err := st.Transition(ctx, task.ID, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, done)
	final := waitStatus(t, st, task.ID, wire.StatusCompleted)
	if final.Hardware == nil || final.Hardware.CPU.Threads != 2 {
		t.Errorf("hardware %+v", final.Hardware)
	}
}
