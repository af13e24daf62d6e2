package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/retry"
)

// resumingReader streams one URL and survives dropped connections: after
// an error it reopens the URL with "Range: bytes=<offset>-" (guarded by
// If-Range so a file replaced on the server is not spliced) and carries on.
// It gives up after maxFailures consecutive failures without progress.
type resumingReader struct {
	ctx         context.Context
	client      *http.Client
	url         string
	log         *slog.Logger
	backoff     retry.Backoff
	maxFailures int
	idle        time.Duration // no byte for this long = stalled connection

	offset    int64 // bytes of the served file consumed
	total     int64 // served file size, -1 while unknown
	validator string
	failures  int

	body     io.ReadCloser
	cancel   context.CancelFunc
	watchdog *time.Timer
	mu       sync.Mutex // guards stalled
	stalled  bool
}

func newResumingReader(ctx context.Context, client *http.Client, url string, log *slog.Logger, b retry.Backoff, maxFailures int, idle time.Duration) *resumingReader {
	return &resumingReader{ctx: ctx, client: client, url: url, log: log, backoff: b,
		maxFailures: maxFailures, idle: idle, total: -1}
}

// permanentError is a download failure retrying cannot fix (404, image
// replaced mid-download).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.body == nil {
			err := r.open()
			if err != nil {
				if errors.As(err, new(permanentError)) || r.ctx.Err() != nil {
					return 0, err
				}
				if err := r.failed(err); err != nil {
					return 0, err
				}
				continue
			}
		}
		n, err := r.body.Read(p)
		r.offset += int64(n)
		if n > 0 {
			r.failures = 0
			r.watchdog.Reset(r.idle)
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF && (r.total < 0 || r.offset == r.total) {
			r.close()
			return n, io.EOF
		}
		if err == io.EOF {
			err = fmt.Errorf("connection closed at byte %d of %d", r.offset, r.total)
		} else if r.isStalled() {
			err = fmt.Errorf("no data for %v: %w", r.idle, err)
		}
		r.close()
		if r.ctx.Err() != nil {
			return n, fmt.Errorf("downloading image: %w", r.ctx.Err())
		}
		r.log.Warn("image download interrupted, will resume", "offset", r.offset, "error", err)
		if n > 0 {
			return n, nil // hand over what arrived; the next Read resumes
		}
		if err := r.failed(err); err != nil {
			return 0, err
		}
	}
}

// failed counts a failure and sleeps before the next attempt.
func (r *resumingReader) failed(err error) error {
	r.failures++
	if r.failures > r.maxFailures {
		return fmt.Errorf("downloading image: giving up after %d attempts without progress: %w", r.failures, err)
	}
	d := r.backoff.Delay(r.failures - 1)
	r.log.Warn("image download failed, retrying", "attempt", r.failures, "offset", r.offset, "retry_in", d.Round(time.Millisecond), "error", err)
	if serr := retry.Sleep(r.ctx, d); serr != nil {
		return fmt.Errorf("downloading image: %w (last error: %v)", serr, err)
	}
	return nil
}

func (r *resumingReader) isStalled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stalled
}

func (r *resumingReader) open() error {
	ctx, cancel := context.WithCancel(r.ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		cancel()
		return permanentError{fmt.Errorf("image URL: %w", err)}
	}
	req.Header.Set("User-Agent", "lpmos-agent")
	// The agent hashes what it writes: transparent gzip by the transport
	// would be fine, but a served .gz must arrive byte for byte.
	req.Header.Set("Accept-Encoding", "identity")
	if r.offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.offset))
		if r.validator != "" {
			req.Header.Set("If-Range", r.validator)
		}
	}
	// The watchdog cancels a connection that delivers nothing for r.idle:
	// a half-dead TCP connection would otherwise block the install forever.
	r.mu.Lock()
	r.stalled = false
	r.mu.Unlock()
	watchdog := time.AfterFunc(r.idle, func() {
		r.mu.Lock()
		r.stalled = true
		r.mu.Unlock()
		cancel()
	})
	resp, err := r.client.Do(req)
	if err != nil {
		watchdog.Stop()
		cancel()
		return fmt.Errorf("GET %s: %w", r.url, err)
	}
	fail := func(e error) error {
		watchdog.Stop()
		resp.Body.Close()
		cancel()
		return e
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != r.offset {
			return fail(fmt.Errorf("GET %s: resumed at wrong offset (Content-Range %q, want %d): %v", r.url, resp.Header.Get("Content-Range"), r.offset, err))
		}
		r.total = total
	case resp.StatusCode == http.StatusOK:
		v := validatorOf(resp)
		if r.offset > 0 {
			if r.validator != "" && v != r.validator {
				return fail(permanentError{fmt.Errorf("GET %s: the image changed on the server during the download", r.url)})
			}
			// The server ignored Range: skip what was already consumed.
			if _, err := io.CopyN(io.Discard, resp.Body, r.offset); err != nil {
				return fail(fmt.Errorf("GET %s: skipping to offset %d: %w", r.url, r.offset, err))
			}
		}
		r.validator = v
		r.total = resp.ContentLength
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fail(fmt.Errorf("GET %s: HTTP %d", r.url, resp.StatusCode))
	default:
		return fail(permanentError{fmt.Errorf("GET %s: HTTP %d", r.url, resp.StatusCode)})
	}
	r.body, r.cancel, r.watchdog = resp.Body, cancel, watchdog
	return nil
}

func (r *resumingReader) close() {
	if r.body != nil {
		r.watchdog.Stop()
		r.body.Close()
		r.cancel()
		r.body = nil
	}
}

// Close releases the current connection.
func (r *resumingReader) Close() error {
	r.close()
	return nil
}

// validatorOf picks the strongest validator for If-Range: a strong ETag,
// else Last-Modified.
func validatorOf(resp *http.Response) string {
	if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		return et
	}
	return resp.Header.Get("Last-Modified")
}

// parseContentRange parses "bytes <start>-<end>/<total>"; total is -1 for "*".
func parseContentRange(s string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("content-range %q", s)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, fmt.Errorf("content-range %q", s)
	}
	first, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, fmt.Errorf("content-range %q", s)
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("content-range %q: %w", s, err)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("content-range %q: %w", s, err)
		}
	}
	return start, total, nil
}
