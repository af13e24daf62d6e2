package agentapi

import (
	"strings"
	"testing"
)

// The region passes its serial console setting to every boot script, and
// refuses one that would not be a single kernel argument.
func TestRegionSerialConsole(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	for _, tc := range []struct{ console, want string }{
		{"", "console=ttyS0,115200 "},
		{"ttyS1,9600n8", "console=ttyS1,9600n8 "},
	} {
		r := newRegion(t, st, "dc1", func(c *Config) { c.SerialConsole = tc.console })
		task := createTask(t, st, "dc1")
		code, script := getText(t, r.srv.URL+"/boot/"+task.Spec.TargetMAC+".ipxe")
		if code != 200 || !strings.Contains(script, tc.want) {
			t.Errorf("console %q: script %d lacks %q:\n%s", tc.console, code, tc.want, script)
		}
	}
	if _, err := New(Config{Store: st, RegionID: "dc1", PublicURL: "http://x", BootDir: t.TempDir(), SerialConsole: "ttyS0 quiet"}); err == nil {
		t.Error("a serial console with a space was accepted")
	}
}
