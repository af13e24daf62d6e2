package client

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
)

func newClient(url, token string, logs *bytes.Buffer) *Client {
	return New(Options{
		BaseURL: url, Token: token,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
		Backoff: retry.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond},
	})
}

func TestCalls(t *testing.T) {
	tests := []struct {
		name      string
		failFirst int    // answer 503 this many times first
		status    int    // then answer this
		body      string // with this body
		check     func(t *testing.T, err error)
		wantCalls int32
		wantRetry bool // a retry must be logged
	}{
		{
			name: "ok", status: 200, body: `{"task_id":"t1","status":"pending_approval"}`, wantCalls: 1,
			check: func(t *testing.T, err error) {
				if err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "5xx then ok", failFirst: 2, status: 200, body: `{}`, wantCalls: 3, wantRetry: true,
			check: func(t *testing.T, err error) {
				if err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "token refused is fatal at once", status: 401, body: `{"error":"bad token"}`, wantCalls: 1,
			check: func(t *testing.T, err error) {
				if !IsAuth(err) || !strings.Contains(err.Error(), "bad token") {
					t.Fatalf("err = %v, want auth error with the reason", err)
				}
			},
		},
		{
			name: "forbidden", status: 403, body: `{"error":"token of another task"}`, wantCalls: 1,
			check: func(t *testing.T, err error) {
				if !IsAuth(err) {
					t.Fatalf("err = %v, want auth error", err)
				}
			},
		},
		{
			name: "conflict", status: 409, body: `{"error":"task cancelled"}`, wantCalls: 1,
			check: func(t *testing.T, err error) {
				if !IsConflict(err) || IsAuth(err) {
					t.Fatalf("err = %v, want conflict", err)
				}
			},
		},
		{
			name: "non-JSON error body", status: 400, body: "<html>bad gateway thing</html>", wantCalls: 1,
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "<html>") {
					t.Fatalf("err = %v", err)
				}
			},
		},
		{
			name: "answer over 1 MiB", status: 200, body: `"` + strings.Repeat("x", MaxResponseBytes) + `"`, wantCalls: 1,
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "larger than") {
					t.Fatalf("err = %v, want size error", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != wire.PathHardware {
					t.Errorf("got auth %q path %q", r.Header.Get("Authorization"), r.URL.Path)
				}
				var rep wire.HardwareReport
				if err := json.NewDecoder(r.Body).Decode(&rep); err != nil || rep.MACAddress != "52:54:00:aa:00:01" {
					t.Errorf("body: %v %+v", err, rep)
				}
				if int(n) <= tt.failFirst {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			var logs bytes.Buffer
			c := newClient(srv.URL, "tok", &logs)
			_, err := c.ReportHardware(context.Background(), wire.HardwareReport{MACAddress: "52:54:00:aa:00:01"})
			tt.check(t, err)
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
			if got := strings.Contains(logs.String(), "retrying"); got != tt.wantRetry {
				t.Errorf("retry logged = %v, want %v; logs:\n%s", got, tt.wantRetry, logs.String())
			}
		})
	}
}

func TestNetworkErrorRetriesUntilContextEnds(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // connection refused from now on
	var logs bytes.Buffer
	c := newClient(url, "", &logs)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.ReportProgress(ctx, wire.Progress{TaskID: "t"})
	if err == nil || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("err = %v, want giving up", err)
	}
	if n := strings.Count(logs.String(), "retrying"); n < 2 {
		t.Errorf("want several logged retries, got %d:\n%s", n, logs.String())
	}
}

func TestApprovalLongPoll(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/agent/approval/52:54:00:aa:00:01" || r.URL.Query().Get("wait") != "30s" {
			t.Errorf("got %s", r.URL)
		}
		if r.Header.Get("Authorization") != "" {
			t.Errorf("demo mode must not send a token")
		}
		_ = json.NewEncoder(w).Encode(wire.ApprovalResponse{
			TaskID: "t1", Status: wire.StatusApproved, Approved: true,
			Install: &wire.InstallSpec{ImageURL: "http://x/img", ImageSize: 10},
		})
	}))
	defer srv.Close()
	c := newClient(srv.URL, "", &bytes.Buffer{})
	got, err := c.Approval(context.Background(), "52:54:00:aa:00:01", 30*time.Second)
	if err != nil || !got.Approved || got.Install == nil || got.Install.ImageSize != 10 {
		t.Fatalf("got %+v, %v", got, err)
	}
}
