package netlimit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A server with short read and write timeouts: a streaming request outlives
// them, any other request of the same length is cut.
func TestClearDeadlines(t *testing.T) {
	h := ClearDeadlines(func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/stream") })(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(600 * time.Millisecond):
			case <-r.Context().Done(): // the read deadline cancels the request
				return
			}
			_, _ = io.WriteString(w, "done")
		}))
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	for path, want := range map[string]string{"/stream/long-poll": "done", "/api/short": ""} {
		resp, err := http.Get(srv.URL + path)
		got := ""
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = string(b)
		}
		if got != want {
			t.Errorf("%s: body %q (err %v), want %q", path, got, err, want)
		}
	}
}
