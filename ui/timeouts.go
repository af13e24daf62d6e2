package ui

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/lpmos/lpmos/internal/netlimit"
)

// Timeouts of the control plane's connections. A request must send its
// headers within ReadHeaderTimeout and its body within ReadTimeout, and be
// answered within WriteTimeout; an idle keep-alive connection is closed
// after IdleTimeout. The streams (/ws, task watch) are exempt from the read
// and write timeouts: the connection caps bound them.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 2 * time.Minute
	IdleTimeout       = 90 * time.Second
)

// streaming selects the requests that outlive the read and write timeouts.
func streaming(r *http.Request) bool {
	p := r.URL.Path
	return p == "/ws" || (strings.HasPrefix(p, "/api/v1/tasks/") && strings.HasSuffix(p, "/watch"))
}

// clearStreamDeadlines exempts the streams from the read/write timeouts.
func clearStreamDeadlines(next http.Handler) http.Handler {
	return netlimit.ClearDeadlines(streaming)(next)
}

// LimitConns wraps the listener Serve is given with wrap (the connection
// caps of internal/netlimit). Call it before Start or Serve.
func (s *Server) LimitConns(wrap func(net.Listener) net.Listener) { s.wrapLn = wrap }
