package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// liveEnv is a control plane served the way lpmos serves it (Serve, which
// also runs the live-updates hub) on a loopback port.
type liveEnv struct {
	url   string
	token string
	store *store.Store
	srv   *ui.Server
	// client trusts the test CA when the env serves HTTPS (newLiveTLS);
	// spki is the base64 sha256 of the served key, chromium's pin for it.
	client *http.Client
	spki   string
	ca     *pki.CA // the test CA of newLiveTLS
}

func newLive(t testing.TB) *liveEnv {
	t.Helper()
	return newLiveOn(t, storetest.New(t))
}

func newLiveOn(t testing.TB, st *store.Store) *liveEnv {
	t.Helper()
	tok, _, err := st.EnsureAdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seedCreatable(t, st) // ui/create_checks_test.go: region dc1 known, image ubuntu 22.04
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	return serveLive(t, st, tok, ui.Config{Store: st, Health: reg, Version: "test", Logger: slog.New(slog.DiscardHandler)})
}

// serveLive serves cfg on a loopback port until the test ends.
func serveLive(t testing.TB, st *store.Store, tok string, cfg ui.Config) *liveEnv {
	t.Helper()
	srv, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	scheme := "http"
	if cfg.GetCertificate != nil {
		scheme = "https"
	}
	return &liveEnv{url: scheme + "://" + ln.Addr().String(), token: tok, store: st, srv: srv, client: http.DefaultClient}
}

// dialWS opens /ws with the bearer token.
func (e *liveEnv) dialWS(t testing.TB, ctx context.Context) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.token}},
		HTTPClient: e.client,
	})
	if err != nil {
		t.Fatalf("dial /ws: %v (%v)", err, resp)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// wsMsg is any /ws message, decoded loosely.
type wsMsg struct {
	Type       string          `json:"type"`
	TaskID     string          `json:"task_id"`
	Revision   int64           `json:"revision"`
	Status     wire.Status     `json:"status"`
	Stage      string          `json:"stage"`
	Percentage int             `json:"percentage"`
	Message    string          `json:"message"`
	Seq        int64           `json:"seq"`
	BytesDone  int64           `json:"bytes_done"`
	BytesTotal int64           `json:"bytes_total"`
	Hardware   *wire.Hardware  `json:"hardware"`
	Task       *store.Task     `json:"task"`
	Tasks      []store.Task    `json:"tasks"`
	Machines   []store.Machine `json:"machines"`
	Regions    []store.Region  `json:"regions"`
	MAC        string          `json:"mac"`
	Machine    *store.Machine  `json:"machine"`
	RegionID   string          `json:"region_id"`
	Event      *store.Event    `json:"event"`
	Resync     bool            `json:"resync"`
}

func readMsg(t testing.TB, ctx context.Context, c *websocket.Conn) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read /ws: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v", typ)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return m
}

// readUntil reads messages until one matches, returning the ones skipped too.
func readUntil(t testing.TB, ctx context.Context, c *websocket.Conn, match func(wsMsg) bool) (wsMsg, []wsMsg) {
	t.Helper()
	var skipped []wsMsg
	for range 200 {
		m := readMsg(t, ctx, c)
		if match(m) {
			return m, skipped
		}
		skipped = append(skipped, m)
	}
	t.Fatalf("no matching message in 200")
	return wsMsg{}, nil
}

// request sends a request to the live server with optional headers and
// cookies and returns the status and body.
func (e *liveEnv) request(t testing.TB, method, path, body string, hdr http.Header, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

// walkToApproved creates a task and moves it to approved through the store,
// as a region and an agent would.
func walkToApproved(t testing.TB, ctx context.Context, st *store.Store, mac string) store.Task {
	t.Helper()
	task, err := st.Transition(ctx, walkToPending(t, ctx, st, mac, "agent-token").ID, wire.StatusApproved, "test")
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// walkToPending creates a task for mac, claims it (with boot token boot,
// "" for none) and reports its hardware: it waits for approval.
func walkToPending(t testing.TB, ctx context.Context, st *store.Store, mac, boot string) store.Task {
	t.Helper()
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimTask(ctx, task.ID, boot); err != nil {
		t.Fatal(err)
	}
	if task, err = st.SetHardware(ctx, task.ID, sampleHardware("node")); err != nil {
		t.Fatal(err)
	}
	return task
}

// approvedWithSession is walkToApproved for a task whose agent holds a
// session (it redeemed a boot token before the approval, as agent/runner
// does): the task, and the session token its progress reports carry.
func approvedWithSession(t testing.TB, ctx context.Context, st *store.Store, mac string) (store.Task, string) {
	t.Helper()
	task := walkToPending(t, ctx, st, mac, "")
	boot, err := st.IssueBootToken(ctx, task.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := st.RedeemBootToken(ctx, task.ID, boot, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if task, err = st.Transition(ctx, task.ID, wire.StatusApproved, "test"); err != nil {
		t.Fatal(err)
	}
	return task, sess
}

func sampleHardware(hostname string) wire.Hardware {
	return wire.Hardware{
		CPU:      wire.CPU{Model: "AMD EPYC 7543P 32-Core Processor", Sockets: 1, Cores: 32, Threads: 64},
		Memory:   wire.Memory{TotalBytes: 256 << 30, TotalGB: 256},
		Disks:    []wire.Disk{{Name: "nvme0n1", SizeBytes: 1920 << 30, Model: "SAMSUNG MZQL21T9", Serial: "S64GNE0R"}},
		NICs:     []wire.NIC{{Name: "eno1", MAC: "52:54:00:aa:00:01", Driver: "ixgbe", SpeedMbps: 10000, Link: true}},
		DMI:      wire.DMI{Vendor: "Supermicro", Product: "AS-1114S-WN10RT", Serial: "A123", BIOSVendor: "American Megatrends", BIOSVersion: "2.4", BIOSDate: "03/02/2023"},
		BootMode: "uefi", Hostname: hostname, CollectedAt: time.Now().UTC(),
	}
}

func isCloseErr(err error) bool {
	var ce websocket.CloseError
	return errors.As(err, &ce)
}
