package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/pxe/agentbin"
)

// TestAgentDemoAgainstServe is the seed's demo end to end: a real `lpmos
// serve`, the agent binary that lpmos embeds (the one machines boot), run
// by hand without --disk, and a dashboard client on /ws that must see the
// seed's progress lines arrive while the task goes ready -> completed.
func TestAgentDemoAgainstServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir)
	p.waitHealthy(t, 30*time.Second)
	agentAPI := fmt.Sprintf("http://127.0.0.1:%d", p.ports[1])
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	img := filepath.Join(dir, "images", "ubuntu.img") // <data-dir>/images, the default --images-dir
	if err := os.WriteFile(img, []byte(strings.Repeat("lpmos demo image\n", 1<<15)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.cli(t, "image", "add", "ubuntu", "22.04", img); err != nil {
		t.Fatalf("image add: %v", err)
	}
	const mac = "52:54:00:de:00:01"
	out, err := p.cli(t, "task", "create", "--mac", mac, "--os", "ubuntu", "--os-version", "22.04", "--hostname", "demo-1", "-o", "json")
	if err != nil {
		t.Fatalf("task create: %v", err)
	}
	var task struct{ ID string }
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatal(err)
	}

	// A dashboard watching.
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(p.url, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + p.token(t)}},
	})
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)
	type msg struct {
		Type       string `json:"type"`
		TaskID     string `json:"task_id"`
		Stage      string `json:"stage"`
		Percentage int    `json:"percentage"`
		Message    string `json:"message"`
		Status     any    `json:"status"`
	}
	msgs := make(chan msg, 256)
	go func() {
		defer close(msgs)
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var m msg
			if json.Unmarshal(data, &m) == nil && m.TaskID == task.ID {
				msgs <- m
			}
		}
	}()

	// The region hands the agent a boot token in the iPXE script, as it
	// would on a kernel command line; the agent exchanges it for its session.
	script := httpGet(t, agentAPI+"/boot/"+mac+".ipxe")
	tok := regexp.MustCompile(`lpmos_token=([A-Za-z0-9_-]+)`).FindStringSubmatch(script)
	if tok == nil || !strings.Contains(script, "lpmos_task="+task.ID) {
		t.Fatalf("boot script has no token for the task:\n%s", script)
	}

	bin, err := agentbin.Binary(runtime.GOARCH)
	if err != nil {
		t.Fatalf("embedded agent for %s: %v", runtime.GOARCH, err)
	}
	agentPath := filepath.Join(t.TempDir(), "lpmos-agent")
	if err := os.WriteFile(agentPath, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	agent := exec.CommandContext(ctx, agentPath, "--mac", mac, "--task", task.ID, "--token", tok[1])
	agent.Env = append(os.Environ(), "REGIONAL_CLIENT_URL="+agentAPI)
	stdout, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	agent.Stderr = agent.Stdout
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	agentOut := bufio.NewScanner(stdout)
	if !agentOut.Scan() || !strings.Contains(agentOut.Text(), "demo mode") || !strings.Contains(agentOut.Text(), "nothing will be written") {
		t.Fatalf("the agent's first line must say it writes nothing: %q", agentOut.Text())
	}
	go func() {
		for agentOut.Scan() {
		}
	}()

	// Approve once the hardware report is in, as an operator would.
	for {
		out, err := p.cli(t, "task", "get", task.ID, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, `"status": "pending_approval"`) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("task never reached pending_approval:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := p.cli(t, "task", "approve", task.ID); err != nil {
		t.Fatalf("approve: %v", err)
	}

	seen := map[string]int{} // stage -> highest percentage seen on /ws
	var lines []string
	completed := false
	for !completed {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("/ws closed; saw %v", lines)
			}
			switch m.Type {
			case "progress":
				seen[m.Stage] = max(seen[m.Stage], m.Percentage)
				lines = append(lines, fmt.Sprintf("[%d%%] %s: %s", m.Percentage, m.Stage, m.Message))
			case "status":
				completed = fmt.Sprint(m.Status) == "completed"
			}
		case <-ctx.Done():
			t.Fatalf("no completion on /ws; progress seen:\n%s", strings.Join(lines, "\n"))
		}
	}
	for stage, pct := range map[string]int{"partitioning": 20, "downloading": 60, "installing": 90, "configuring": 100, "completed": 100} {
		if seen[stage] != pct {
			t.Errorf("stage %s reached %d%% on /ws, want %d%% (saw:\n%s)", stage, seen[stage], pct, strings.Join(lines, "\n"))
		}
	}
	if err := agent.Wait(); err != nil {
		t.Errorf("agent exited with %v", err)
	}
	// The boot token was used once, by the agent.
	req, _ := http.NewRequest("POST", agentAPI+"/api/v1/agent/session", strings.NewReader(`{"mac_address":"`+mac+`","task_id":"`+task.ID+`"}`))
	req.Header.Set("Authorization", "Bearer "+tok[1])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("boot token redeemable after the agent used it: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	t.Logf("progress as the dashboard saw it:\n%s", strings.Join(lines, "\n"))
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b.String())
	}
	return b.String()
}
