package app_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
)

// TestBackupRestoreServesTheSameTasks takes a backup from a running serve
// with tasks, restores it into a new data dir and starts a serve there: it
// serves the tasks of the backup (not those created after it), with the
// same admin token and CA, and accepts writes. Damaged backups and a used
// data dir are refused with nothing written.
func TestBackupRestoreServesTheSameTasks(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dirA := filepath.Join(root, "a")
	a := startServe(t, dirA)
	a.waitHealthy(t, 30*time.Second)
	tok := a.token(t)
	var before []store.Task
	for i, mac := range []string{"00:1a:2b:3c:4d:01", "00:1a:2b:3c:4d:02"} {
		var task store.Task
		if _, err := apiDo(t, "POST", a.url+"/api/v1/tasks", tok, map[string]any{
			"region_id": "dc1", "target_mac": mac, "os_type": "ubuntu", "os_version": "22.04", "hostname": "web-" + string(rune('1'+i)), "allow_missing_image": true,
		}, &task); err != nil {
			t.Fatal(err)
		}
		before = append(before, task)
	}

	// The region claims them (pending -> ready); back up once it has, so
	// the restored statuses are known.
	poll(t, 20*time.Second, "both tasks ready", func() bool {
		var list ui.TaskList
		if _, err := apiDo(t, "GET", a.url+"/api/v1/tasks?status=ready", tok, nil, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Tasks) != len(before) {
			return false
		}
		before = list.Tasks
		return true
	})

	file := filepath.Join(root, "lpmos.backup")
	out, _, err := cliIn("backup", file, "--data-dir", dirA)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if !strings.Contains(out, "etcd revision") {
		t.Errorf("backup output: %q", out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v (want 0600: it holds the CA key)", err, fi.Mode())
	}
	// Written after the backup: the restore must not have it.
	if _, err := apiDo(t, "POST", a.url+"/api/v1/tasks", tok, map[string]any{
		"region_id": "dc1", "target_mac": "00:1a:2b:3c:4d:03", "os_type": "ubuntu", "os_version": "22.04", "allow_missing_image": true,
	}, nil); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(root, "truncated.backup")
	notBackup := filepath.Join(root, "not.backup")
	used := filepath.Join(root, "used")
	for _, f := range []struct {
		path string
		data []byte
	}{{truncated, data[:len(data)/2]}, {notBackup, []byte("hello\n")}, {filepath.Join(used, "x"), []byte("x")}} {
		_ = os.MkdirAll(filepath.Dir(f.path), 0o700)
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ name, file, dir, want string }{
		{"truncated", truncated, filepath.Join(root, "t"), "truncated"},
		{"not a backup", notBackup, filepath.Join(root, "n"), "not an lpmos backup"},
		{"data dir in use", file, used, "not empty"},
		{"no data dir", file, "", "--data-dir"},
		{"missing file", filepath.Join(root, "nope"), filepath.Join(root, "m"), "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"restore", c.file}
			if c.dir != "" {
				args = append(args, "--data-dir", c.dir)
			}
			_, _, err := cliIn(args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("restore %s: %v, want an error with %q", c.name, err, c.want)
			}
			if c.dir != used {
				if _, err := os.Stat(c.dir); c.dir != "" && !os.IsNotExist(err) {
					t.Errorf("a failed restore left %s behind", c.dir)
				}
			}
		})
	}
	if ents, _ := filepath.Glob(filepath.Join(root, ".*restore*")); len(ents) > 0 {
		t.Errorf("failed restores left temp dirs: %v", ents)
	}

	dirB := filepath.Join(root, "b")
	out, _, err = cliIn("restore", file, "--data-dir", dirB)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.Contains(out, "lpmos serve --data-dir "+dirB) {
		t.Errorf("restore output: %q", out)
	}
	a.stop(t)
	if _, _, err := cliIn("backup", filepath.Join(root, "stopped.backup"), "--data-dir", dirA); err == nil || !strings.Contains(err.Error(), "is lpmos serve running") {
		t.Errorf("backup of a stopped member: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "stopped.backup")); !os.IsNotExist(err) {
		t.Errorf("a failed backup left its file")
	}

	b := startServe(t, dirB)
	b.waitHealthy(t, 30*time.Second)
	if got := b.token(t); got != tok {
		t.Fatalf("restored admin token differs")
	}
	if !pkiSame(t, filepath.Join(dirA, "pki", "ca.crt"), filepath.Join(dirB, "pki", "ca.crt")) {
		t.Errorf("restored CA differs from the backed-up one")
	}
	var list ui.TaskList
	if _, err := apiDo(t, "GET", b.url+"/api/v1/tasks", tok, nil, &list); err != nil {
		t.Fatal(err)
	}
	sort.Slice(list.Tasks, func(i, j int) bool { return list.Tasks[i].ID < list.Tasks[j].ID })
	sort.Slice(before, func(i, j int) bool { return before[i].ID < before[j].ID })
	if len(list.Tasks) != len(before) {
		t.Fatalf("restored serve has %d tasks, want the %d of the backup: %+v", len(list.Tasks), len(before), list.Tasks)
	}
	for i, want := range before {
		got := list.Tasks[i]
		if got.ID != want.ID || got.Spec.TargetMAC != want.Spec.TargetMAC || got.Spec.Hostname != want.Spec.Hostname || got.Status.Status != want.Status.Status {
			t.Errorf("task %d: got %s %s %s %s, want %s %s %s %s", i, got.ID, got.Spec.TargetMAC, got.Spec.Hostname, got.Status.Status,
				want.ID, want.Spec.TargetMAC, want.Spec.Hostname, want.Status.Status)
		}
	}
	var detail ui.TaskDetail
	if _, err := apiDo(t, "GET", b.url+"/api/v1/tasks/"+before[0].ID, tok, nil, &detail); err != nil || len(detail.Events) == 0 {
		t.Errorf("restored task detail: %v, %d events", err, len(detail.Events))
	}
	if _, err := apiDo(t, "POST", b.url+"/api/v1/tasks", tok, map[string]any{
		"region_id": "dc1", "target_mac": "00:1a:2b:3c:4d:04", "os_type": "ubuntu", "os_version": "22.04", "allow_missing_image": true,
	}, nil); err != nil {
		t.Fatalf("the restored member does not take writes: %v", err)
	}
	b.stop(t)
}
