package agentapi

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
)

// The agent API over TLS (Config.TLSCert set):
//
// One port serves both. A connection whose first byte is 0x16 (a TLS
// handshake record) is served over TLS with the region's certificate,
// issued by the cluster CA; any other connection is plain HTTP, which only
// iPXE needs (Debian's iPXE has no HTTPS): plain HTTP reaches /boot/* (the
// iPXE script, kernel, initramfs, iPXE binaries) and /healthz, and every
// other path — the agent API with its tokens, user_data, the images — gets
// 403 with a JSON error saying to use https. The iPXE script hands the agent
// the https URL and the CA's sha256 (lpmos_ca=), which the agent pins.
//
// One port rather than two keeps the single --api-port every deployment,
// firewall rule and DHCP answer already knows.

// sniffTimeout bounds the wait for a new connection's first byte.
const sniffTimeout = 10 * time.Second

// tlsHandshakeRecord is the first byte of every TLS connection.
const tlsHandshakeRecord = 0x16

// plainPaths are what plain HTTP may reach when the agent API is on TLS.
func plainAllowed(path string) bool {
	return strings.HasPrefix(path, "/boot/") || path == "/healthz"
}

// requireTLS refuses plain-HTTP requests outside plainAllowed.
func (r *Region) requireTLS(next http.Handler) http.Handler {
	msg := fmt.Sprintf("plain HTTP only serves the network boot (/boot/*) here: call the agent API and images over https (%s); the agent pins the cluster CA with %s=%s%s",
		r.cfg.PublicURL, wire.ParamCA, wire.CAPinPrefix, r.cfg.CAPin)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.TLS == nil && !plainAllowed(req.URL.Path) {
			r.log.Info("agent API refused plain HTTP", "method", req.Method, "path", req.URL.Path, "remote", req.RemoteAddr)
			httpapi.WriteError(w, http.StatusForbidden, msg)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// checkTLS validates the TLS part of cfg and fills BootURL.
func checkTLS(cfg *Config) error {
	u, _ := url.Parse(cfg.PublicURL) // New checked it
	if cfg.TLSCert == nil {
		if cfg.BootURL == "" {
			cfg.BootURL = cfg.PublicURL
		}
		return nil
	}
	if u.Scheme != "https" {
		return fmt.Errorf("agentapi: PublicURL %q must be https when the agent API serves TLS", cfg.PublicURL)
	}
	if len(cfg.CAPin) != 64 || strings.Trim(cfg.CAPin, "0123456789abcdef") != "" {
		return errors.New("agentapi: CAPin (the hex sha256 of the CA certificate) is required with TLSCert")
	}
	if len(cfg.TLSCert.Certificate) < 2 {
		return errors.New("agentapi: TLSCert must carry its chain up to the CA (the agent finds the pinned CA in it)")
	}
	if cfg.BootURL == "" {
		b := *u
		b.Scheme = "http"
		cfg.BootURL = b.String()
	}
	cfg.BootURL = strings.TrimRight(cfg.BootURL, "/")
	return nil
}

// sniffListener hands out TLS connections for TLS clients and plain ones
// for the rest; see the comment at the top of this file.
type sniffListener struct {
	net.Listener
	tls   *tls.Config
	log   *slog.Logger
	conns chan net.Conn
	errc  chan error
	done  chan struct{}
	once  sync.Once
}

func newSniffListener(ln net.Listener, cfg *tls.Config, log *slog.Logger) *sniffListener {
	l := &sniffListener{Listener: ln, tls: cfg, log: log, conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case l.errc <- err:
			case <-l.done:
			}
			return
		}
		// Sniffing waits for the client: never in the accept loop.
		go l.sniff(c)
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return
	}
	var out net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == tlsHandshakeRecord {
		out = tls.Server(out, l.tls)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		_ = out.Close()
	}
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sniffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// peekedConn reads the sniffed byte first.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ReadFrom keeps the underlying connection's sendfile path for the kernel
// and initramfs downloads.
func (c *peekedConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }
