// Package client talks to the regional agent API (see agent/wire).
//
// Every call retries network errors and 5xx/429 answers with capped,
// jittered exponential backoff until its context ends, logging each retry:
// a machine in a rack must outlive a restarting server, and must never give
// up without saying why. 4xx answers are returned at once as *APIError;
// 401/403 (token refused) are fatal for the caller.
//
// Credentials: the boot token from the kernel line is sent once, to
// Session; the session token it returns (SetToken) goes with every later
// call, and with image downloads through AuthTransport.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
	"github.com/lpmos/lpmos/agent/wire"
)

// MaxResponseBytes caps every answer read from the server: the agent runs
// in a small initramfs and every legitimate answer is tiny.
const MaxResponseBytes = 1 << 20

// Options configure a Client. Only BaseURL is required.
type Options struct {
	BaseURL        string        // e.g. http://10.55.0.1:8081
	Token          string        // session token; empty sends no Authorization (see SetToken)
	HTTPClient     *http.Client  // default: a client without overall timeout (requests carry their own)
	Logger         *slog.Logger  // default: slog.Default()
	Backoff        retry.Backoff // retry delays
	RequestTimeout time.Duration // per attempt, long-polls get wait on top; default 30s
}

// Client is an agent API client. It is safe for concurrent use.
type Client struct {
	base    string
	host    string // of base: only requests there carry the token
	mu      sync.Mutex
	token   string
	offset  time.Duration // server clock minus local clock, from Date headers
	http    *http.Client
	log     *slog.Logger
	backoff retry.Backoff
	timeout time.Duration
}

// New returns a Client for o.BaseURL.
func New(o Options) *Client {
	c := &Client{
		base:    strings.TrimRight(o.BaseURL, "/"),
		token:   o.Token,
		http:    o.HTTPClient,
		log:     o.Logger,
		backoff: o.Backoff,
		timeout: o.RequestTimeout,
	}
	if u, err := url.Parse(c.base); err == nil {
		c.host = u.Host
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	return c
}

// SetToken sets the session token sent with every later call.
func (c *Client) SetToken(tok string) {
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
}

// Token returns the current session token.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// ServerNow is the server's clock as far as the Date headers of its
// answers tell (the local clock before any answer): progress seq follows
// it, because the server refuses a seq beyond its own clock, and a
// machine's RTC may be hours off.
func (c *Client) ServerNow() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// AuthTransport wraps base (nil: http.DefaultTransport) so that requests
// to the agent API's host carry the session token: the image download
// goes through it. Requests to any other host carry nothing.
func (c *Client) AuthTransport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &authTransport{c: c, base: base}
}

type authTransport struct {
	c    *Client
	base http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if tok := t.c.Token(); tok != "" && req.URL.Host == t.c.host && req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return t.base.RoundTrip(req)
}

// APIError is a non-retryable answer from the server.
type APIError struct {
	Method     string
	Path       string
	StatusCode int
	Message    string // the wire.Error text, or the start of the body
	ResendFrom string // wire.Error.ResendFrom: progress the server lost, to send again
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.StatusCode, e.Message)
}

// IsAuth reports whether err is the server refusing the token (401/403).
// The agent cannot recover from that: the token is on its kernel line.
func IsAuth(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden)
}

// ResendFrom is the stage from which the server asks for the agent's
// progress reports again (a 409 whose wire.Error has ResendFrom), or "".
func ResendFrom(err error) string {
	var e *APIError
	if errors.As(err, &e) && e.StatusCode == http.StatusConflict {
		return e.ResendFrom
	}
	return ""
}

// IsConflict reports whether err is a 409: the server refused a transition
// (not approved, cancelled, progress regression).
func IsConflict(err error) bool { return statusIs(err, http.StatusConflict) }

// IsNotFound reports whether err is a 404 (for the approval poll: no task
// for this MAC yet).
func IsNotFound(err error) bool { return statusIs(err, http.StatusNotFound) }

func statusIs(err error, code int) bool {
	var e *APIError
	return errors.As(err, &e) && e.StatusCode == code
}

// Session exchanges the boot token (lpmos_token) for a session token; it
// does not set it (SetToken).
func (c *Client) Session(ctx context.Context, boot string, r wire.SessionRequest) (wire.SessionResponse, error) {
	var out wire.SessionResponse
	err := c.doAs(ctx, boot, http.MethodPost, wire.PathSession, 0, r, &out)
	return out, err
}

// ReportHardware posts the hardware report.
func (c *Client) ReportHardware(ctx context.Context, r wire.HardwareReport) (wire.HardwareResponse, error) {
	var out wire.HardwareResponse
	err := c.do(ctx, http.MethodPost, wire.PathHardware, 0, r, &out)
	return out, err
}

// ReportProgress posts one progress report.
func (c *Client) ReportProgress(ctx context.Context, p wire.Progress) (wire.ProgressResponse, error) {
	var out wire.ProgressResponse
	err := c.do(ctx, http.MethodPost, wire.PathProgress, 0, p, &out)
	return out, err
}

// ReportFailure tells the server the install failed and why.
func (c *Client) ReportFailure(ctx context.Context, f wire.FailureReport) error {
	return c.do(ctx, http.MethodPost, wire.PathFailure, 0, f, nil)
}

// Approval long-polls the approval state of mac: the server answers when
// the state changes or after wait.
func (c *Client) Approval(ctx context.Context, mac string, wait time.Duration) (wire.ApprovalResponse, error) {
	var out wire.ApprovalResponse
	path := wire.PathApproval + url.PathEscape(mac)
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	err := c.do(ctx, http.MethodGet, path, wait, nil, &out)
	return out, err
}

// do runs one API call with retries. extra lengthens the per-attempt
// timeout for long-polls.
func (c *Client) do(ctx context.Context, method, path string, extra time.Duration, in, out any) error {
	return c.doAs(ctx, c.Token(), method, path, extra, in, out)
}

// doAs is do with an explicit bearer token.
func (c *Client) doAs(ctx context.Context, token, method, path string, extra time.Duration, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: encoding request: %w", method, path, err)
		}
	}
	for attempt := 0; ; attempt++ {
		retryable, err := c.once(ctx, token, method, path, extra, body, out)
		if err == nil || !retryable {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: giving up: %w (last error: %v)", method, path, ctx.Err(), err)
		}
		delay := c.backoff.Delay(attempt)
		c.log.Warn("agent API call failed, retrying", "method", method, "path", path,
			"attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "error", err)
		if err := retry.Sleep(ctx, delay); err != nil {
			return fmt.Errorf("%s %s: giving up: %w", method, path, err)
		}
	}
}

func (c *Client) once(ctx context.Context, token, method, path string, extra time.Duration, body []byte, out any) (retryable bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+extra)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "lpmos-agent")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// A certificate that does not chain to the pinned CA is not a
		// passing network problem: retrying cannot fix it.
		return !IsPin(err), fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		c.mu.Lock()
		c.offset = time.Until(d)
		c.mu.Unlock()
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return true, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if len(data) > MaxResponseBytes {
		return false, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, MaxResponseBytes)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil || len(bytes.TrimSpace(data)) == 0 {
			return false, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return false, fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
		return false, nil
	}
	apiErr := &APIError{Method: method, Path: path, StatusCode: resp.StatusCode, Message: errorMessage(data)}
	var e wire.Error
	if json.Unmarshal(data, &e) == nil {
		apiErr.ResendFrom = e.ResendFrom
	}
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return true, apiErr
	}
	return false, apiErr
}

// errorMessage extracts wire.Error's text, or falls back to the body (a
// proxy in between may answer in HTML or plain text).
func errorMessage(data []byte) string {
	var e wire.Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return "(no body)"
	}
	return s
}
