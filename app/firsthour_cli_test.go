package app_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The first hour of a new operator, against a real serve over HTTPS, each
// command run as its own process so the exit code is the real one:
// validation of task create (issue 15 item 4), a mistyped subcommand,
// --server host:port, -o name|yaml|wide, lpmos version (item 7), and the
// machine/region/task rm commands (item 9).
func TestCLIFirstHour(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, _ := startServeHTTPS(t, dir)
	hostPort := strings.TrimPrefix(p.url, "https://") // localhost:<port>
	lp := func(args ...string) (string, string, int) {
		t.Helper()
		return runLpmos(t, 30*time.Second, append(args, "--server", hostPort, "--data-dir", dir)...)
	}
	expect := func(what string, code, want int, out string, contains ...string) {
		t.Helper()
		if code != want {
			t.Errorf("%s: exit code %d, want %d\n%s", what, code, want, out)
		}
		for _, c := range contains {
			if !strings.Contains(out, c) {
				t.Errorf("%s: output lacks %q:\n%s", what, c, out)
			}
		}
	}

	// Item 4: what could never run is refused with a reason, exit 1.
	_, errOut, code := lp("task", "create", "--mac", "52:54:00:15:07:01", "--os", "ubuntu", "--os-version", "22.04", "--region", "mars")
	expect("unknown region", code, 1, errOut, `region "mars" is unknown`, "known: dc1", "HTTP 422")
	_, errOut, code = lp("task", "create", "--mac", "52:54:00:15:07:01", "--os", "ubuntu", "--os-version", "22.04")
	expect("no image", code, 1, errOut, "no image for ubuntu 22.04", "lpmos image add ubuntu 22.04", "--allow-missing-image", "HTTP 422")
	_, errOut, code = lp("task", "create", "--mac", "01:00:5e:00:00:01", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image")
	expect("multicast MAC", code, 1, errOut, "multicast", "HTTP 400")
	_, errOut, code = lp("task", "create", "--mac", "00:00:00:00:00:00", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image")
	expect("zero MAC", code, 1, errOut, "all zeros", "HTTP 400")
	out, errOut, code := lp("task", "create", "--mac", "52:54:00:15:07:01", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image", "-o", "json")
	expect("create with --allow-missing-image", code, 0, out+errOut)
	var task struct{ ID string }
	if err := json.Unmarshal([]byte(out), &task); err != nil || task.ID == "" {
		t.Fatalf("create output %q: %v", out, err)
	}

	// Item 7: a mistyped subcommand fails with a suggestion.
	_, errOut, code = lp("task", "aprove", task.ID)
	expect("mistyped subcommand", code, 1, errOut, `unknown command "aprove" for "lpmos task"`, "did you mean approve?")
	_, errOut, code = runLpmos(t, 10*time.Second, "tsk")
	expect("mistyped command", code, 1, errOut, `unknown command "tsk"`, "task")
	_, errOut, code = lp("task", "list", "-o", "xml")
	expect("unknown output", code, 1, errOut, "table, wide, json, yaml, name")
	out, _, code = runLpmos(t, 10*time.Second, "version")
	expect("version", code, 0, out, "lpmos ", "commit: ", "date: ", "go: go1.")
	if strings.Contains(out, "lpmos dev\n") {
		t.Errorf("version still says dev:\n%s", out)
	}

	// -o on the lists (host:port was https all along).
	out, _, code = lp("task", "list", "-o", "name")
	expect("task list -o name", code, 0, out)
	if strings.TrimSpace(out) != task.ID {
		t.Errorf("task list -o name = %q, want just %s", out, task.ID)
	}
	out, _, code = lp("task", "list", "-o", "yaml")
	expect("task list -o yaml", code, 0, out, "- id: "+task.ID, "target_mac: ", "52:54:00:15:07:01")
	out, _, code = lp("task", "list", "-o", "wide")
	expect("task list -o wide", code, 0, out, "ATTEMPT", "TARGET DISK", "REASON", task.ID)
	out, _, code = lp("region", "list", "-o", "name")
	expect("region list -o name", code, 0, out)
	if strings.TrimSpace(out) != "dc1" {
		t.Errorf("region list -o name = %q, want dc1", out)
	}
	out, _, code = lp("region", "list")
	expect("region list", code, 0, out, "ID", "MEMBER", "dc1")
	out, _, code = lp("machine", "list")
	expect("machine list (empty)", code, 0, out, "MAC", "LAST SEEN")
	_, errOut, code = lp("machine", "rm", "52:54:00:15:07:99")
	expect("machine rm unknown", code, 1, errOut, "HTTP 404")
	out, _, code = lp("image", "list", "-o", "yaml")
	expect("image list -o yaml (empty)", code, 0, out, "[]")

	// Completion from the server: task ids (with MAC and status), regions.
	// (The word being completed comes last; the server flags after the command.)
	complete := func(args ...string) (string, string, int) {
		t.Helper()
		words := append([]string{"__complete"}, args[:2]...) // task <command>, then the flags, then the rest
		words = append(append(words, "--server", hostPort, "--data-dir", dir), args[2:]...)
		return runLpmos(t, 30*time.Second, words...)
	}
	out, _, code = complete("task", "get", "")
	expect("complete task ids", code, 0, out, task.ID+"\t52:54:00:15:07:01")
	out, _, code = complete("task", "list", "--status", "pend")
	expect("complete statuses", code, 0, out, "pending\n", "pending_approval\n")
	out, _, code = complete("task", "create", "--region", "")
	expect("complete regions", code, 0, out, "dc1\t")

	// Item 9: task rm refuses an active task (409 naming its status),
	// deletes an ended one, which is then gone.
	_, errOut, code = lp("task", "rm", task.ID)
	expect("rm active", code, 1, errOut, "HTTP 409", "cancel it first", "not deleted")
	if _, _, code = lp("task", "cancel", task.ID); code != 0 {
		t.Fatalf("cancel: exit %d", code)
	}
	out, _, code = lp("task", "rm", task.ID)
	expect("rm cancelled", code, 0, out, "task "+task.ID+" deleted (cancelled, 52:54:00:15:07:01)")
	_, errOut, code = lp("task", "get", task.ID)
	expect("get deleted", code, 1, errOut, "HTTP 404")
	// The MAC is free again.
	_, errOut, code = lp("task", "create", "--mac", "52:54:00:15:07:01", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image")
	expect("create after rm", code, 0, errOut)
}
