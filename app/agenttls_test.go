package app_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/client"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/pki"
)

// TestAgentAPIOverTLS runs `lpmos serve` with the default --agent-tls=on:
// the iPXE script (plain HTTP) pins the data dir's cluster CA for an https
// agent URL, plain agent calls are refused, pinned HTTPS calls answered.
func TestAgentAPIOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir, "--agent-tls", "on")
	p.waitHealthy(t, 30*time.Second)
	caPEM, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pin := wire.CAPinPrefix + pki.Fingerprint(ca)
	plainURL := fmt.Sprintf("http://127.0.0.1:%d", p.ports[1])
	httpsURL := fmt.Sprintf("https://127.0.0.1:%d", p.ports[1])

	get := func(c *http.Client, url string) (int, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// /api/v1/health can be ok before the region has registered (its
	// certificate is issued first): wait for the agent port itself.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(plainURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent API not listening after 20 s: %v", err)
		}
	}
	code, script := get(http.DefaultClient, plainURL+"/boot/52:54:00:ab:00:01.ipxe")
	if code != 200 || !strings.Contains(script, "lpmos_client="+httpsURL+" lpmos_ca="+pin+" ") {
		t.Fatalf("plain iPXE script %d, want lpmos_client=%s lpmos_ca=%s:\n%s", code, httpsURL, pin, script)
	}
	code, body := get(http.DefaultClient, plainURL+wire.PathApproval+"52:54:00:ab:00:01")
	if code != http.StatusForbidden || !strings.Contains(body, `"error"`) || !strings.Contains(body, "https") {
		t.Fatalf("plain agent call: %d %s, want 403 JSON saying to use https", code, body)
	}
	hc, err := client.PinnedHTTPClient(pin)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(hc, httpsURL+"/healthz"); code != 200 {
		t.Fatalf("pinned HTTPS /healthz: %d %s", code, body)
	}
	wrong, _ := client.PinnedHTTPClient(wire.CAPinPrefix + strings.Repeat("11", 32))
	if _, err := wrong.Get(httpsURL + "/healthz"); !client.IsPin(err) {
		t.Fatalf("wrong pin: %v, want a pin refusal", err)
	}
}
