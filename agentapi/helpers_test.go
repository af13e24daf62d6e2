package agentapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

var macSeq atomic.Uint32

// nextMAC returns a MAC no other test of this package uses.
func nextMAC() string {
	n := macSeq.Add(1)
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(n>>16), byte(n>>8), byte(n))
}

// testRegion is a Region served by an httptest server.
type testRegion struct {
	*Region
	srv *httptest.Server
	st  *store.Store
}

// newRegion builds a Region for region id on st, served over real HTTP.
// mod adjusts the config before New.
func newRegion(t *testing.T, st *store.Store, id string, mod func(*Config)) *testRegion {
	t.Helper()
	var h http.Handler
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hh := h
		mu.Unlock()
		hh.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	boot := t.TempDir()
	for name, data := range map[string]string{"vmlinuz": "KERNEL-0123456789abcdef", "initramfs.img": "INITRAMFS"} {
		if err := os.WriteFile(filepath.Join(boot, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		Store:           st,
		RegionID:        id,
		PublicURL:       srv.URL,
		BootDir:         boot,
		DiscoverUnknown: true,
		PollInterval:    50 * time.Millisecond,
		// Test images live in t.TempDir() and origins on loopback.
		Images: imagesrc.Policy{Dir: os.TempDir(), AllowLocalURLs: true},
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mu.Lock()
	h = r.Handler()
	mu.Unlock()
	return &testRegion{Region: r, srv: srv, st: st}
}

// start runs the region until the test ends.
func (tr *testRegion) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- tr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Start returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Start did not return after cancel")
		}
	})
	waitFor(t, 10*time.Second, "task sync running", func() bool {
		return tr.State()[ServiceTaskSync].State == StateRunning
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitStatus(t *testing.T, st *store.Store, id string, want wire.Status) store.Task {
	t.Helper()
	var task store.Task
	waitFor(t, 10*time.Second, fmt.Sprintf("task %s to be %s", id, want), func() bool {
		var err error
		task, err = st.GetTask(context.Background(), id)
		return err == nil && task.Status.Status == want
	})
	return task
}

func createTask(t *testing.T, st *store.Store, region string) store.Task {
	t.Helper()
	task, err := st.CreateTask(context.Background(), store.Spec{
		RegionID: region, TargetMAC: nextMAC(), OSType: "ubuntu", OSVersion: "22.04",
		Hostname: "web-1", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA test@lpmos"}, UserData: "#cloud-config\n",
	})
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	return task
}

// advance moves a task (created pending, of region r) to status want
// through the store's own transitions, as the real actors would.
func advance(t *testing.T, r *testRegion, id string, want wire.Status) {
	t.Helper()
	ctx := context.Background()
	st := r.st
	path := map[wire.Status][]wire.Status{
		wire.StatusPending:         nil,
		wire.StatusReady:           {wire.StatusReady},
		wire.StatusPendingApproval: {wire.StatusReady, wire.StatusPendingApproval},
		wire.StatusApproved:        {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved},
		wire.StatusInstalling:      {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling},
		wire.StatusStalled:         {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled},
		wire.StatusCompleted:       {wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusCompleted},
		wire.StatusFailed:          {wire.StatusReady, wire.StatusFailed},
		wire.StatusCancelled:       {wire.StatusReady, wire.StatusCancelled},
	}[want]
	for _, s := range path {
		cur, err := st.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status.Status == s {
			continue
		}
		switch s {
		case wire.StatusReady:
			_, err = st.ClaimTask(ctx, id, "")
		case wire.StatusPendingApproval:
			_, err = st.SetHardware(ctx, id, wire.Hardware{BootMode: "bios"})
		case wire.StatusInstalling:
			_, err = st.ReportProgress(ctx, id, wire.Progress{Seq: 1, Stage: wire.StagePartitioning, Percentage: 5})
		case wire.StatusFailed:
			_, err = st.Fail(ctx, id, "test failure", nil)
		default:
			_, err = st.Transition(ctx, id, s, "test")
		}
		if err != nil && !errors.Is(err, store.ErrConflict) {
			t.Fatalf("move %s to %s: %v", id, s, err)
		}
	}
	waitStatus(t, st, id, want)
}

// addImage puts a local image file with data into the catalog.
func addImage(t *testing.T, st *store.Store, osType, version string, data []byte) store.Image {
	t.Helper()
	path := filepath.Join(t.TempDir(), osType+"-"+version+".img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	img := store.Image{OSType: osType, OSVersion: version, Source: path, Format: "raw",
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), FileSize: int64(len(data))}
	if err := st.PutImage(context.Background(), img); err != nil {
		t.Fatalf("put image: %v", err)
	}
	return img
}

// call does one HTTP request with an optional bearer token and JSON body
// (a []byte body is sent as is) and decodes a JSON answer into out.
func call(t *testing.T, method, url, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		var e wire.Error
		if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: error answer %d is not wire.Error JSON: %q", method, url, resp.StatusCode, data)
		}
		if ep, ok := out.(*wire.Error); ok {
			*ep = e
		}
		return resp.StatusCode
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, data, err)
		}
	}
	return resp.StatusCode
}

func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// newStore starts a real embedded etcd for the test.
func newStore(t *testing.T) *store.Store { return storetest.New(t) }

// newHTTPServer serves h over real HTTP until the test ends and returns its URL.
func newHTTPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return data
}

func itoa(n int) string { return fmt.Sprint(n) }

// sessionFor opens an agent session of task id the way an agent does
// (a boot token redeemed), straight through the store.
func sessionFor(t *testing.T, st *store.Store, id string) string {
	t.Helper()
	ctx := context.Background()
	boot, err := st.IssueBootToken(ctx, id, time.Minute)
	if err != nil {
		t.Fatalf("boot token of %s: %v", id, err)
	}
	sess, _, err := st.RedeemBootToken(ctx, id, boot, "192.0.2.1:1")
	if err != nil {
		t.Fatalf("redeem boot token of %s: %v", id, err)
	}
	return sess
}

var bootTokenRE = regexp.MustCompile(`lpmos_token=([A-Za-z0-9_-]+)`)

// bootToken fetches the task's iPXE script from r and returns its boot token.
func bootToken(t *testing.T, r *testRegion, mac string) string {
	t.Helper()
	code, script := getText(t, r.srv.URL+"/boot/"+mac+".ipxe")
	m := bootTokenRE.FindStringSubmatch(script)
	if code != 200 || m == nil {
		t.Fatalf("no boot token in the script (%d):\n%s", code, script)
	}
	return m[1]
}

// exchange redeems a boot token at the session endpoint, as the agent's
// first call does, and returns the status and answer.
func exchange(t *testing.T, r *testRegion, boot string, task store.Task) (int, wire.SessionResponse) {
	t.Helper()
	var sr wire.SessionResponse
	code := call(t, "POST", r.srv.URL+wire.PathSession, boot, wire.SessionRequest{MACAddress: task.Spec.TargetMAC, TaskID: task.ID}, &sr)
	return code, sr
}

// getAuth is GET with a bearer token; it returns the status and body.
func getAuth(t *testing.T, url, token string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// approvedWithSession creates a task of region dc1 served by r, walks it
// to approved through the region (claimed, hardware reported with the
// agent's session) and returns it with that session token.
func approvedWithSession(t *testing.T, st *store.Store, r *testRegion) (store.Task, string) {
	t.Helper()
	task := createTask(t, st, "dc1")
	advance(t, r, task.ID, wire.StatusPendingApproval)
	sess := sessionFor(t, st, task.ID)
	advance(t, r, task.ID, wire.StatusApproved)
	return task, sess
}
