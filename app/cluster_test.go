package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/app"
	"github.com/lpmos/lpmos/store"
	etcdversion "go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// clusterNode is one lpmos process of a test cluster: its flags are kept
// so the same member can be restarted on the same ports.
type clusterNode struct {
	*lpmosProc
	name      string
	flags     []string // serve flags without the command (ports, data dir)
	clientURL string
}

func newClusterNode(t testing.TB, name string) *clusterNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	args, url, ports := serveArgs(t, dir)
	n := &clusterNode{name: name, flags: args[1:], lpmosProc: &lpmosProc{dataDir: dir, url: url, ports: ports}}
	for i, a := range n.flags {
		if a == "--etcd-client-url" {
			n.clientURL = n.flags[i+1]
		}
	}
	return n
}

// run starts `lpmos <args> <flags>` as a child process.
func (n *clusterNode) run(t testing.TB, args ...string) {
	t.Helper()
	p := &lpmosProc{dataDir: n.dataDir, url: n.url, ports: n.ports}
	spawn(t, n.name, p, append(args, n.flags...))
	n.lpmosProc = p
}

// kill9 kills the process (SIGKILL) and reaps it.
func (n *clusterNode) kill9(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = n.cmd.Wait()
}

// waitExit waits for the process to end by itself.
func (n *clusterNode) waitExit(t *testing.T, within time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("%s still running after %s", n.name, within)
		return nil
	}
}

// cliIn runs an lpmos command in this test process.
func cliIn(args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	root := app.NewRoot("test", &out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func apiDo(t testing.TB, method, url, token string, body, out any) (int, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", data, err)
		}
	}
	return resp.StatusCode, nil
}

func members(t *testing.T, n *clusterNode, token string) store.ClusterStatus {
	t.Helper()
	var st store.ClusterStatus
	if _, err := apiDo(t, "GET", n.url+"/api/v1/cluster/members", token, nil, &st); err != nil {
		t.Fatalf("members via %s: %v", n.name, err)
	}
	return st
}

// waitMembers polls until ok(status) holds.
func waitMembers(t testing.TB, n *clusterNode, token string, within time.Duration, what string, ok func(store.ClusterStatus) bool) store.ClusterStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	var st store.ClusterStatus
	for time.Now().Before(deadline) {
		if _, err := apiDo(t, "GET", n.url+"/api/v1/cluster/members", token, nil, &st); err == nil && ok(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %s; last members: %+v", what, within, st)
	return st
}

func createTask(t *testing.T, n *clusterNode, token, mac, region string) (store.Task, error) {
	t.Helper()
	var task store.Task
	_, err := apiDo(t, "POST", n.url+"/api/v1/tasks", token, map[string]any{
		"region_id": region, "target_mac": mac, "os_type": "ubuntu", "os_version": "22.04", "allow_missing_image": true,
	}, &task)
	return task, err
}

func joinToken(t testing.TB, n *clusterNode, extra ...string) string {
	t.Helper()
	out, errOut, err := cliIn(append([]string{"token", "create", "--server", n.url, "--data-dir", n.dataDir}, extra...)...)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, errOut)
	}
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, store.JoinTokenPrefix) || !strings.Contains(errOut, "lpmos join") {
		t.Fatalf("token create printed %q / %q", out, errOut)
	}
	return tok
}

// tlsStore connects to members as an external client with a member's
// certificate (what --etcd-endpoints with --etcd-ca/cert/key does).
func tlsStore(t testing.TB, certsOf *clusterNode, endpoints ...string) *store.Store {
	t.Helper()
	pki := filepath.Join(certsOf.dataDir, "pki")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{
		Endpoints: endpoints, CAFile: filepath.Join(pki, "ca.crt"),
		CertFile: filepath.Join(pki, "member.crt"), KeyFile: filepath.Join(pki, "member.key"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("connect to %v: %v", endpoints, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// putSome writes n 128-byte values through st, one after the other (the
// write path works; BenchmarkClusterPut measures its latency).
func putSome(t testing.TB, st *store.Store, n int) {
	t.Helper()
	val := strings.Repeat("x", 128)
	for i := range n {
		if _, err := st.Client().Put(context.Background(), fmt.Sprintf("/bench/put/%d", i), val); err != nil {
			t.Fatalf("put %d of %d: %v", i+1, n, err)
		}
	}
}

func findNode(nodes []*clusterNode, name string) *clusterNode {
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// TestClusterJoinFailoverRemove: three processes on loopback. Two join the
// first; tasks written through member 1 are read through member 3's API
// and seen live on its WebSocket; the leader is killed with SIGKILL and the
// survivors keep creating and approving; the killed member restarts from
// its data dir and catches up; a removed member stops, and its restart is
// refused.
func TestClusterJoinFailoverRemove(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts three lpmos processes")
	}
	m1, m2, m3 := newClusterNode(t, "m1"), newClusterNode(t, "m2"), newClusterNode(t, "m3")
	nodes := []*clusterNode{m1, m2, m3}
	m1.run(t, "serve", "--name", "m1")
	m1.waitHealthy(t, 30*time.Second)
	admin := m1.token(t)
	for _, f := range []string{"pki/ca.key", "pki/member.key"} {
		if info, err := os.Stat(filepath.Join(m1.dataDir, f)); err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, info)
		}
	}
	st1 := tlsStore(t, m1, m1.clientURL)
	putSome(t, st1, 5)

	tok := joinToken(t, m1, "--ttl", "10m", "--reusable") // admits m2 and m3

	// Bad input is refused with what to do, and the cluster is untouched.
	pin, rest, _ := strings.Cut(strings.TrimPrefix(tok, store.JoinTokenPrefix), "::")
	bad := newClusterNode(t, "bad")
	for _, c := range []struct{ name, token, nodeName, want string }{
		{"wrong secret", store.JoinTokenPrefix + pin + "::" + rest + "x", "bad", "wrong join token secret"},
		{"unknown id", store.JoinTokenPrefix + pin + "::ffffffffffff." + strings.SplitN(rest, ".", 2)[1], "bad", "unknown or expired join token"},
		{"CA not matching the pin", store.JoinTokenPrefix + strings.Repeat("0", 64) + "::" + rest, "bad", "does not match the token's pin"},
		{"name taken", tok, "m1", "is taken by the member"},
		{"garbage", "hello", "bad", "malformed join token"},
	} {
		_, _, err := cliIn(append([]string{"join", m1.url, "--token", c.token, "--name", c.nodeName, "--region-id", "dcx"}, bad.flags...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	if st := members(t, m1, admin); len(st.Members) != 1 {
		t.Fatalf("refused joins changed the cluster: %+v", st.Members)
	}

	joinStart := time.Now()
	m2.run(t, "join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2")
	// A bound, not a figure: a join is ~8 s idle (etcd's publish retry) and
	// took 30 s beside the other parallel tests at load 40.
	m2.waitHealthy(t, 90*time.Second)
	t.Logf("BENCH join m2 (process start -> healthy voter): %s", time.Since(joinStart).Round(time.Millisecond))
	for _, l := range strings.Split(m2.logText(), "\n") {
		if strings.Contains(l, "took=") {
			t.Logf("m2: %s", l)
		}
	}
	if !strings.Contains(m2.logText(), "tolerates no failure") {
		t.Errorf("joining a one-member cluster did not warn about zero fault tolerance")
	}
	joinStart = time.Now()
	m3.run(t, "join", m2.url, "--token", tok, "--name", "m3", "--region-id", "dc3") // through a joined member
	m3.waitHealthy(t, 90*time.Second)
	t.Logf("BENCH join m3 via m2 (process start -> healthy voter): %s", time.Since(joinStart).Round(time.Millisecond))

	st := waitMembers(t, m3, admin, 20*time.Second, "3 healthy voters with their regions", func(st store.ClusterStatus) bool {
		if len(st.Members) != 3 || st.Voters != 3 || st.Leader == "" {
			return false
		}
		for _, m := range st.Members {
			if !m.Healthy || m.Learner || len(m.Regions) != 1 || m.Regions[0] != map[string]string{"m1": "dc1", "m2": "dc2", "m3": "dc3"}[m.Name] {
				return false
			}
		}
		return true
	})
	if st.FaultTolerance != 1 {
		t.Fatalf("fault tolerance %d", st.FaultTolerance)
	}
	// m3 was signed by m2, which holds no CA key on disk: it opened the
	// sealed one with the cluster key it got when it joined. Every member
	// holds that key (0600); etcd holds the CA key sealed only.
	key1, err := os.ReadFile(filepath.Join(m1.dataDir, "pki", store.ClusterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		p := filepath.Join(n.dataDir, "pki", store.ClusterKeyFile)
		info, err := os.Stat(p)
		if k, _ := os.ReadFile(p); err != nil || info.Mode().Perm() != 0o600 || !bytes.Equal(k, key1) {
			t.Fatalf("%s: cluster key %v %v", n.name, err, info)
		}
	}
	if caKV, err := st1.Client().Get(context.Background(), "/cluster/ca"); err != nil || len(caKV.Kvs) != 1 || bytes.Contains(caKV.Kvs[0].Value, []byte("PRIVATE KEY")) || !bytes.Contains(caKV.Kvs[0].Value, []byte("key_sealed")) {
		t.Fatalf("/cluster/ca in etcd: %v %v", err, caKV)
	}
	out, _, err := cliIn("member", "list", "--server", m3.url, "--token", admin)
	if err != nil || !strings.Contains(out, "voter") || !strings.Contains(out, "dc3") || !strings.Contains(out, "tolerates 1 failure") {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	t.Logf("member list:\n%s", out)
	var hrep struct {
		Services []struct{ Name, State, Detail string }
	}
	if _, err := apiDo(t, "GET", m3.url+"/api/v1/health", "", nil, &hrep); err != nil {
		t.Fatal(err)
	}
	var memberSvcs []string
	for _, s := range hrep.Services {
		if strings.HasPrefix(s.Name, "etcd/member/") && s.State == "running" {
			memberSvcs = append(memberSvcs, s.Name)
		}
	}
	if len(memberSvcs) != 3 {
		t.Fatalf("health members: %+v", hrep.Services)
	}

	leaderNode := findNode(nodes, st.Leader)
	var follower *clusterNode
	for _, n := range nodes {
		if n != leaderNode {
			follower = n
			break
		}
	}
	stL := tlsStore(t, m1, leaderNode.clientURL)
	putSome(t, stL, 5)
	stF := tlsStore(t, m1, follower.clientURL)
	putSome(t, stF, 5)

	// Member 3's WebSocket sees tasks created through member 1.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(m3.url, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + admin}},
	})
	if err != nil {
		t.Fatalf("dial m3 /ws: %v", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 20)
	var created []string
	for i := range 5 {
		task, err := createTask(t, m1, admin, fmt.Sprintf("02:00:00:00:01:%02x", i), "dc3")
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, task.ID)
	}
	seen := map[string]bool{}
	for len(seen) < len(created) {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("m3 /ws after %d of %d tasks: %v", len(seen), len(created), err)
		}
		var m struct {
			Type   string      `json:"type"`
			TaskID string      `json:"task_id"`
			Task   *store.Task `json:"task"`
		}
		_ = json.Unmarshal(data, &m)
		id := m.TaskID
		if m.Task != nil {
			id = m.Task.ID
		}
		if slices.Contains(created, id) {
			seen[id] = true
		}
	}
	var list struct{ Tasks []store.Task }
	if _, err := apiDo(t, "GET", m3.url+"/api/v1/tasks", admin, nil, &list); err != nil || len(list.Tasks) != 5 {
		t.Fatalf("tasks via m3: %v %d", err, len(list.Tasks))
	}

	// Kill the leader; the survivors keep taking writes.
	survivors := []*clusterNode{}
	for _, n := range nodes {
		if n != leaderNode {
			survivors = append(survivors, n)
		}
	}
	killedAt := time.Now()
	leaderNode.kill9(t)
	var resumed time.Duration
	for i := 0; ; i++ {
		if _, err := createTask(t, survivors[i%2], admin, fmt.Sprintf("02:00:00:00:02:%02x", i%250), "dc3"); err == nil {
			resumed = time.Since(killedAt)
			break
		}
		if time.Since(killedAt) > 30*time.Second {
			t.Fatalf("no write accepted within 30s of killing leader %s", leaderNode.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("BENCH leader %s killed (SIGKILL): writes through the API resumed after %s", leaderNode.name, resumed.Round(time.Millisecond))
	stS := tlsStore(t, survivors[0], survivors[0].clientURL, survivors[1].clientURL)
	if err := stS.PutImage(context.Background(), store.Image{OSType: "ubuntu", OSVersion: "22.04", Source: "http://127.0.0.1:1/u.img", Format: "raw", SHA256: strings.Repeat("a", 64), Size: 1}); err != nil {
		t.Fatal(err)
	}
	if err := stS.RememberRegion(context.Background(), "dcnone"); err != nil { // the test plays this region
		t.Fatal(err)
	}
	var afterKill []string
	for i := range 4 {
		via := survivors[i%2]
		// Tasks of region dc_none stay pending: the test plays the region
		// and the agent through the store, then approves via the API.
		task, err := createTask(t, via, admin, fmt.Sprintf("02:00:00:00:03:%02x", i), "dcnone")
		if err != nil {
			t.Fatal(err)
		}
		afterKill = append(afterKill, task.ID)
		if _, err := stS.ClaimTask(context.Background(), task.ID, "agent-token"); err != nil {
			t.Fatal(err)
		}
		if _, err := stS.SetHardware(context.Background(), task.ID, wire.Hardware{BootMode: "uefi"}); err != nil {
			t.Fatal(err)
		}
		var approved store.Task
		if _, err := apiDo(t, "PUT", survivors[(i+1)%2].url+"/api/v1/tasks/"+task.ID+"/approve", admin, nil, &approved); err != nil {
			t.Fatalf("approve via %s: %v", survivors[(i+1)%2].name, err)
		}
		if approved.Status.Status != wire.StatusApproved {
			t.Fatalf("approve: %+v", approved.Status)
		}
	}

	// The killed member restarts from its data dir (name, URLs and region
	// come from its member.json) and catches up.
	restartAt := time.Now()
	leaderNode.run(t, "serve")
	waitMembers(t, leaderNode, admin, 40*time.Second, "restarted member sees 3 healthy voters", func(st store.ClusterStatus) bool {
		h := 0
		for _, m := range st.Members {
			if m.Healthy && !m.Learner {
				h++
			}
		}
		return h == 3
	})
	t.Logf("BENCH restart of killed member %s -> all 3 healthy: %s", leaderNode.name, time.Since(restartAt).Round(time.Millisecond))
	var back store.Task
	if _, err := apiDo(t, "GET", leaderNode.url+"/api/v1/tasks/"+afterKill[3], admin, nil, &back); err != nil || back.Status.Status != wire.StatusApproved {
		t.Fatalf("restarted member did not catch up: %v %+v", err, back.Status)
	}

	// Remove a member: it stops by itself, its data dir is tombstoned, and
	// a restart of it is refused.
	victim := survivors[1]
	via := survivors[0]
	// Its certificate works until then (so the refusals below mean something).
	vcli := certClient(t, victim, via.clientURL)
	tokHash, err := etcdRead(vcli)
	if err != nil {
		t.Fatalf("the member's own certificate before its removal: %v", err)
	}
	if err := etcdWrite(vcli, tokHash); err != nil {
		t.Fatalf("the member's own certificate before its removal: %v", err)
	}
	before := members(t, via, admin)
	var victimID, viaPeer string
	for _, m := range before.Members {
		switch m.Name {
		case victim.name:
			victimID = m.ID
		case via.name:
			viaPeer = m.PeerURLs[0]
		}
	}
	out, _, err = cliIn("member", "remove", victim.name, "--server", via.url, "--token", admin)
	if err != nil || !strings.Contains(out, "removed member "+victim.name) {
		t.Fatalf("member remove: %v %s", err, out)
	}
	// Its certificate is revoked: every member's CRL lists it soon, and
	// etcd refuses it at the TLS handshake on the peer and client ports of
	// every member, whatever member id it claims (store/membercerts.go).
	var leaderID string
	for _, m := range before.Members {
		if m.Name == leaderNode.name {
			leaderID = m.ID
		}
	}
	for _, n := range []*clusterNode{via, leaderNode} {
		for _, ep := range []string{n.clientURL, peerURLOf(before, n.name)} {
			waitCertRefused(t, victim, ep, 10*time.Second)
		}
	}
	for _, from := range []string{victimID, leaderID} {
		if code, body, err := peerStream(t, victim, viaPeer, from, before.ClusterID); err == nil {
			t.Fatalf("raft stream of the removed member as %s: %d %s, want refused at the handshake", from, code, body)
		}
	}
	if !strings.Contains(via.logText(), "transport: certificate serial") {
		t.Errorf("%s did not log the revoked certificate it refused", via.name)
	}
	// A real etcd client with its certificate can neither read (the sealed
	// CA key, the admin token hash) nor write: refused at the handshake
	// (the CRL) and, behind it, by etcd auth (its user is deleted).
	var wg sync.WaitGroup
	for _, ep := range []string{via.clientURL, leaderNode.clientURL} {
		c := certClient(t, victim, ep)
		for what, call := range map[string]func() error{
			"read":       func() error { _, err := etcdRead(c); return err },
			"write":      func() error { return etcdWrite(c, "attacker's hash") },
			"CA key get": func() error { _, err := etcdGetCA(c); return err },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := call(); !credentialRefused(err) {
					t.Errorf("the removed member's certificate, %s via %s: %v, want refused", what, ep, err)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if err := victim.waitExit(t, 20*time.Second); err == nil {
		t.Fatalf("removed member exited cleanly; want an error exit")
	}
	if !strings.Contains(victim.logText(), "removed from the cluster") {
		t.Errorf("removed member did not say so in its log")
	}
	if _, err := os.Stat(filepath.Join(victim.dataDir, "etcd", "removed")); err != nil {
		t.Fatalf("no tombstone: %v", err)
	}
	_, _, err = cliIn(append([]string{"serve"}, victim.flags...)...)
	if err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("restart of a removed member: %v", err)
	}
	waitMembers(t, via, admin, 10*time.Second, "2 members after the removal", func(st store.ClusterStatus) bool {
		return len(st.Members) == 2 && st.Voters == 2
	})
	if _, err := createTask(t, leaderNode, admin, "02:00:00:00:04:01", "dc3"); err != nil {
		t.Fatalf("write after removal: %v", err)
	}

	// Two members left: killing one loses quorum. The other says in its
	// health that etcd writes fail while its region services keep running,
	// and recovers by itself when the member is back.
	via.kill9(t)
	lostAt := time.Now()
	region := "region/" + map[string]string{"m1": "dc1", "m2": "dc2", "m3": "dc3"}[leaderNode.name] + "/dhcp-proxy"
	waitHealth(t, leaderNode, 20*time.Second, "etcd writes failing", func(svcs map[string]healthSvc) bool {
		return svcs["etcd"].State == "failed" && strings.Contains(svcs["etcd"].Error, "writes are failing") && svcs[region].State == "running"
	})
	t.Logf("BENCH quorum lost -> health says writes fail: %s", time.Since(lostAt).Round(time.Millisecond))
	via.run(t, "serve")
	backAt := time.Now()
	waitHealth(t, leaderNode, 30*time.Second, "etcd recovered", func(svcs map[string]healthSvc) bool {
		return svcs["etcd"].State == "running"
	})
	t.Logf("BENCH quorum back -> health recovered: %s", time.Since(backAt).Round(time.Millisecond))
	if _, err := createTask(t, leaderNode, admin, "02:00:00:00:04:02", "dc3"); err != nil {
		t.Fatalf("write after quorum returned: %v", err)
	}
}

type healthSvc struct{ Name, State, Error, Detail string }

// waitHealth polls /api/v1/health (any status code) until ok holds.
func waitHealth(t *testing.T, n *clusterNode, within time.Duration, what string, ok func(map[string]healthSvc) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	svcs := map[string]healthSvc{}
	for time.Now().Before(deadline) {
		var rep struct{ Services []healthSvc }
		resp, err := http.Get(n.url + "/api/v1/health")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&rep)
			resp.Body.Close()
			svcs = map[string]healthSvc{}
			for _, s := range rep.Services {
				svcs[s.Name] = s
			}
			if ok(svcs) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: %s: not within %s; health: %+v", n.name, what, within, svcs)
}

// TestInterruptedJoinRecovers: a join that stops right after the learner
// add (before the member starts) is finished by running the same join
// again, even with a single-use token; then the member leaves.
func TestInterruptedJoinRecovers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts lpmos processes")
	}
	m1, m2 := newClusterNode(t, "m1"), newClusterNode(t, "m2")
	m1.run(t, "serve", "--name", "m1")
	m1.waitHealthy(t, 30*time.Second)
	admin := m1.token(t)
	tok := joinToken(t, m1, "--ttl", "5m", "--single-use")

	_, errOut, err := cliIn(append([]string{"join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2", "--exit-after-add"}, m2.flags...)...)
	if err != nil {
		t.Fatalf("interrupted join: %v\n%s", err, errOut)
	}
	st := members(t, m1, admin)
	if len(st.Members) != 2 || st.Voters != 1 {
		t.Fatalf("after the interrupted join: %+v", st)
	}
	var pending store.Member
	for _, m := range st.Members {
		if m.Name == "" {
			pending = m
		}
	}
	if !pending.Learner || pending.Healthy {
		t.Fatalf("interrupted add should be an unstarted learner: %+v", pending)
	}

	// Another box cannot use the single-use token meanwhile.
	other := newClusterNode(t, "m3")
	if _, _, err := cliIn(append([]string{"join", m1.url, "--token", tok, "--name", "m3", "--region-id", "dc3"}, other.flags...)...); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use of a single-use token: %v", err)
	}

	m2.run(t, "join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2")
	m2.waitHealthy(t, 40*time.Second)
	if !strings.Contains(m2.logText(), "reused_interrupted_add=true") {
		t.Errorf("second join did not reuse the interrupted add")
	}
	st = waitMembers(t, m1, admin, 20*time.Second, "2 voters", func(st store.ClusterStatus) bool {
		return len(st.Members) == 2 && st.Voters == 2
	})
	for _, m := range st.Members {
		if m.Name == "m2" && m.ID != pending.ID {
			t.Fatalf("m2 got id %s, the interrupted add was %s", m.ID, pending.ID)
		}
	}

	// A joined member cannot join again, and leaves with `lpmos leave`.
	if _, _, err := cliIn(append([]string{"join", m1.url, "--token", tok, "--name", "m2"}, m2.flags...)...); err == nil || !strings.Contains(err.Error(), "already holds a cluster member") {
		t.Fatalf("join on a member's data dir: %v", err)
	}
	out, _, err := cliIn("leave", "--server", m2.url, "--data-dir", m2.dataDir, "--token", admin)
	if err != nil || !strings.Contains(out, "left the cluster") {
		t.Fatalf("leave: %v %s", err, out)
	}
	if err := m2.waitExit(t, 20*time.Second); err == nil {
		t.Fatal("left member exited cleanly; want an error exit")
	}
	waitMembers(t, m1, admin, 10*time.Second, "1 member after leave", func(st store.ClusterStatus) bool {
		return len(st.Members) == 1
	})
	// Its certificate died with its membership.
	if _, err := etcdRead(certClient(t, m2, m1.clientURL)); !credentialRefused(err) {
		t.Fatalf("a left member's certificate reads etcd: %v", err)
	}
	if _, _, err := cliIn(append([]string{"serve"}, m2.flags...)...); err == nil || !errors.Is(err, store.ErrRemoved) && !strings.Contains(err.Error(), "removed") {
		t.Fatalf("restart after leave: %v", err)
	}
	m1.waitHealthy(t, 10*time.Second)
}

// certClient is an etcd client to endpoint with n's member certificate.
func certClient(t *testing.T, n *clusterNode, endpoint string) *clientv3.Client {
	t.Helper()
	pki := filepath.Join(n.dataDir, "pki")
	tc, err := transport.TLSInfo{
		CertFile: filepath.Join(pki, "member.crt"), KeyFile: filepath.Join(pki, "member.key"),
		TrustedCAFile: filepath.Join(pki, "ca.crt"),
	}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// etcdRead reads the CA record (its key sealed) and the admin token hash.
func etcdRead(c *clientv3.Client) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "/cluster/ca"); err != nil {
		return "", err
	}
	r, err := c.Get(ctx, "/auth/admin-token-sha256")
	if err != nil {
		return "", err
	}
	if len(r.Kvs) != 1 {
		return "", errors.New("no admin token hash in etcd")
	}
	return string(r.Kvs[0].Value), nil
}

// etcdWrite writes the admin token hash (val: the value it has).
func etcdWrite(c *clientv3.Client, val string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Put(ctx, "/auth/admin-token-sha256", val)
	return err
}

// peerStream opens a raft stream to peerURL as member fromID with n's
// certificate, the way a peer does, and returns the answer.
func peerStream(t *testing.T, n *clusterNode, peerURL, fromID, clusterID string) (int, string, error) {
	t.Helper()
	pki := filepath.Join(n.dataDir, "pki")
	tc, err := transport.TLSInfo{
		CertFile: filepath.Join(pki, "member.crt"), KeyFile: filepath.Join(pki, "member.key"),
		TrustedCAFile: filepath.Join(pki, "ca.crt"),
	}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	req, err := http.NewRequest("GET", peerURL+"/raft/stream/message/"+fromID, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Server-From", fromID)
	req.Header.Set("X-Server-Version", etcdversion.Version)
	req.Header.Set("X-Min-Cluster-Version", "3.0.0")
	req.Header.Set("X-Etcd-Cluster-ID", clusterID)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("raft stream to %s: %w", peerURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), nil
}
