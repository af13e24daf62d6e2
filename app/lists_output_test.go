package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/app"
	"sigs.k8s.io/yaml"
)

// Issue 15 item 7: -o table|wide|json|yaml|name on every list of the CLI,
// against a real serve (the commands in process): name prints the ids
// only, json and yaml the data (the same, as a list), wide the table's
// columns and more.
func TestCLIListsOutputFormats(t *testing.T) {
	t.Parallel() // own data dir and ports, processes only
	dir := t.TempDir()
	p := startServe(t, dir)
	p.waitHealthy(t, 30*time.Second)
	// The ~50 commands run in process (p.cli), not each as a child of the
	// race-built test binary: what is checked is their output, and a child
	// costs some 0.3 s of CPU to start.
	lp := func(args ...string) string {
		t.Helper()
		out, err := p.cli(t, args...)
		if err != nil {
			t.Fatalf("lpmos %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// One of each: task, discovered machine, image, join token, operator token.
	taskOut := lp("task", "create", "--mac", "52:54:00:15:0e:01", "--os", "ubuntu", "--os-version", "22.04", "--hostname", "wide-01", "--allow-missing-image", "-o", "name")
	taskID := strings.TrimSpace(taskOut)
	report := `{"mac_address":"52:54:00:15:0e:02","hardware":{"boot_mode":"uefi","dmi":{"vendor":"QEMU","product":"Standard PC"}}}`
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/api/v1/agent/hardware", p.ports[1]), "application/json", strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("discovery report: %s", resp.Status)
	}
	img := filepath.Join(dir, "images", "tiny.img") // image add takes files under <data-dir>/images
	if err := os.MkdirAll(filepath.Dir(img), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, bytes.Repeat([]byte{0}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	lp("image", "add", "debian", "12", img)
	lp("token", "create", "--ttl", "2h")
	tokID := strings.TrimSpace(lp("token", "list", "-o", "name"))
	lp("token", "operator", "create", "ci-bot", "--read-only")

	lists := []struct {
		args  []string
		names []string // -o name, in order
		table []string // headers and cells of the table
		wide  []string // what only -o wide shows
		field string   // a json field of each item
	}{
		{[]string{"task", "list"}, []string{taskID}, []string{"ID", "STATUS", "wide-01", "ready"}, []string{"ATTEMPT", "TARGET DISK", "REASON"}, "id"},
		{[]string{"machine", "list"}, []string{"52:54:00:15:0e:02"}, []string{"MAC", "LAST SEEN", "QEMU Standard PC"}, []string{"DISKS", "NICS", "BOOT", "uefi"}, "mac"},
		{[]string{"region", "list"}, []string{"dc1"}, []string{"ID", "MEMBER", "AGENT API", "dc1"}, []string{"UP FOR", "SERVICES"}, "id"},
		{[]string{"image", "list"}, []string{"debian/12"}, []string{"OS", "SHA256", "debian", img}, []string{"FILE SIZE", "ADDED", "DERIVED", "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"}, "os_type"},
		{[]string{"token", "list"}, []string{tokID}, []string{"ID", "USE", "single-use", "valid"}, []string{"CREATED", "REVOKED"}, "id"},
		{[]string{"token", "operator", "list"}, []string{"ci-bot"}, []string{"NAME", "KIND", "ci-bot", "read-only"}, []string{"AGE", "MAY", "read (GET only)"}, "name"},
		{[]string{"member", "list"}, nil, []string{"NAME", "ROLE", "voter", "1 voting member(s)"}, []string{"ANSWERED", "RAFT INDEX"}, "name"},
	}
	for _, l := range lists {
		what := strings.Join(l.args, " ")
		table := lp(l.args...)
		wide := lp(append(l.args, "-o", "wide")...)
		for _, c := range l.table {
			if !strings.Contains(table, c) || !strings.Contains(wide, c) {
				t.Errorf("%s: %q missing from the table or the wide table:\n%s\n%s", what, c, table, wide)
			}
		}
		for _, c := range l.wide {
			if strings.Contains(table, c) || !strings.Contains(wide, c) {
				t.Errorf("%s: %q must be in -o wide only:\n%s\n%s", what, c, table, wide)
			}
		}
		// -o completes its formats.
		var comp bytes.Buffer
		root := app.NewRoot("test", &comp, io.Discard)
		root.SetArgs(append(append([]string{"__complete"}, l.args...), "-o", ""))
		if err := root.Execute(); err != nil || !strings.Contains(comp.String(), "table\nwide\njson\nyaml\nname\n") {
			t.Errorf("%s -o completion: %v\n%s", what, err, comp.String())
		}
		// name: ids only, one a line.
		names := strings.Fields(lp(append(l.args, "-o", "name")...))
		if l.args[0] == "member" {
			if len(names) != 1 || strings.Contains(table, "(not started)") {
				t.Errorf("member list -o name = %q", names)
			}
		} else if strings.Join(names, " ") != strings.Join(l.names, " ") {
			t.Errorf("%s -o name = %q, want %q", what, names, l.names)
		}
		// json and yaml: the same data, a list of items (member list: the
		// cluster status with its members).
		js := lp(append(l.args, "-o", "json")...)
		ys := lp(append(l.args, "-o", "yaml")...)
		fromYAML, err := yaml.YAMLToJSON([]byte(ys))
		if err != nil {
			t.Fatalf("%s -o yaml: %v\n%s", what, err, ys)
		}
		for format, data := range map[string][]byte{"json": []byte(js), "yaml": fromYAML} {
			var items []map[string]any
			if l.args[0] == "member" {
				var st struct {
					Voters  int              `json:"voters"`
					Members []map[string]any `json:"members"`
				}
				if err := json.Unmarshal(data, &st); err != nil || st.Voters != 1 {
					t.Errorf("%s -o %s: %v %s", what, format, err, data)
				}
				items = st.Members
			} else if err := json.Unmarshal(data, &items); err != nil {
				t.Errorf("%s -o %s is not a list: %v\n%s", what, format, err, data)
			}
			if len(items) != 1 || items[0][l.field] == nil || items[0][l.field] == "" {
				t.Errorf("%s -o %s: want one item with %q: %s", what, format, l.field, data)
			}
		}
	}
}
