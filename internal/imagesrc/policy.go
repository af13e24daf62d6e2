package imagesrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Policy says where catalog sources may come from. The zero Policy allows
// no local file (no images directory) and only public URLs.
type Policy struct {
	// Dir is the images directory: a local source must resolve (symlinks
	// followed) to a file below it.
	Dir string
	// AllowLocalURLs permits URLs on loopback, link-local, unspecified and
	// multicast addresses (lpmos serve --allow-local-image-urls).
	AllowLocalURLs bool
	// OwnPorts are this node's listen ports: a URL to one of them on one
	// of this node's addresses is always refused (the control plane must
	// not serve itself as an image).
	OwnPorts []int
	// QemuImg is the qemu-img program; default "qemu-img" on PATH.
	QemuImg string
}

// IsURL reports whether an image source is an http(s) URL rather than a
// local file.
func IsURL(src string) bool {
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// LocalPath checks a local source and returns it with symlinks resolved:
// absolute, an existing regular file, below the images directory.
func (p Policy) LocalPath(src string) (string, error) {
	if strings.Contains(src, "://") {
		return "", refuse("url-scheme", "source %q: only http and https URLs are served", src)
	}
	if p.Dir == "" {
		return "", refuse("source-under-images-dir", "this node has no images directory: start lpmos serve with --images-dir")
	}
	if !filepath.IsAbs(src) {
		return "", refuse("source-under-images-dir", "source %q is not an absolute path: give the file's full path under the images directory %s", src, p.Dir)
	}
	dir, err := filepath.EvalSymlinks(p.Dir)
	if err != nil {
		return "", fmt.Errorf("images directory %s: %w", p.Dir, err)
	}
	resolved, err := filepath.EvalSymlinks(src)
	if errors.Is(err, fs.ErrNotExist) {
		return "", refuse("source-exists", "no file %s: copy the image into the images directory %s first", src, p.Dir)
	}
	if err != nil {
		return "", refuse("source-exists", "cannot resolve %s: %v", src, err)
	}
	rel, err := filepath.Rel(dir, resolved)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", refuse("source-under-images-dir", "%s (resolved: %s) is outside the images directory %s: copy or move the image there", src, resolved, p.Dir)
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return "", refuse("source-exists", "cannot read %s: %v", src, err)
	}
	if !st.Mode().IsRegular() {
		return "", refuse("source-exists", "%s is not a regular file", src)
	}
	return resolved, nil
}

// CheckURL checks a URL source: http or https, a host whose every address
// is allowed (see checkAddr). The addresses are checked again when a
// connection is made (Client), so a name that changes its answer later
// gains nothing.
func (p Policy) CheckURL(ctx context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, refuse("url-valid", "source %q is not a valid URL: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, refuse("url-scheme", "source %q: only http and https URLs are served", raw)
	}
	host := u.Hostname()
	if host == "" {
		return nil, refuse("url-valid", "source %q has no host", raw)
	}
	port := 80
	if u.Scheme == "https" {
		port = 443
	}
	if s := u.Port(); s != "" {
		if port, err = strconv.Atoi(s); err != nil || port <= 0 || port > 65535 {
			return nil, refuse("url-valid", "source %q: bad port %q", raw, s)
		}
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, refuse("url-resolvable", "source %q: cannot resolve %s: %v", raw, host, err)
	}
	for _, a := range addrs {
		if err := p.checkAddr(a, port); err != nil {
			return nil, refuse("url-address", "source %q: %s resolves to %s: %v", raw, host, a, err)
		}
	}
	return u, nil
}

// checkAddr refuses the node's own listen ports, and, unless
// AllowLocalURLs, loopback, link-local, unspecified and multicast
// addresses (cloud metadata services live at link-local addresses).
func (p Policy) checkAddr(a netip.Addr, port int) error {
	a = a.Unmap()
	if slices.Contains(p.OwnPorts, port) && isOwnAddr(a) {
		return fmt.Errorf("port %d of this node is lpmos itself", port)
	}
	if p.AllowLocalURLs {
		return nil
	}
	switch {
	case a.IsLoopback():
		return errors.New("loopback addresses are refused (lpmos serve --allow-local-image-urls permits them)")
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		return errors.New("link-local addresses are refused (lpmos serve --allow-local-image-urls permits them)")
	case a.IsUnspecified():
		return errors.New("the unspecified address is refused (lpmos serve --allow-local-image-urls permits it)")
	case a.IsMulticast():
		return errors.New("multicast addresses are refused")
	}
	return nil
}

// isOwnAddr: loopback, unspecified, or an address of a local interface.
func isOwnAddr(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: treat as own, the safe answer
	}
	for _, ia := range ifAddrs {
		if pfx, err := netip.ParsePrefix(ia.String()); err == nil && pfx.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// Transport is an HTTP transport whose every connection (redirects
// included) is checked against the policy at dial time, and which ignores
// proxy environment variables (a proxy would hide the real address).
func (p Policy) Transport() *http.Transport {
	d := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("image source address %q: %w", address, err)
			}
			if err := p.checkAddr(ap.Addr(), int(ap.Port())); err != nil {
				return refuse("url-address", "image source connection to %s: %v", address, err)
			}
			return nil
		},
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
}

// Client is an HTTP client over Transport that follows at most five
// redirects, to http(s) only.
func (p Policy) Client() *http.Client {
	return &http.Client{
		Transport: p.Transport(),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return refuse("url-scheme", "redirect to %s: only http and https", req.URL.Redacted())
			}
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			return nil
		},
	}
}

// Open opens a source (a local file or URL, checked against the policy)
// at its first byte. size is the source's length, -1 when unknown.
func (p Policy) Open(ctx context.Context, src string) (rc io.ReadCloser, size int64, err error) {
	if !IsURL(src) {
		path, err := p.LocalPath(src)
		if err != nil {
			return nil, 0, err
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, fmt.Errorf("open image %s: %w", path, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("stat image %s: %w", path, err)
		}
		return f, st.Size(), nil
	}
	u, err := p.CheckURL(ctx, src)
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, refuse("url-valid", "source %q: %v", src, err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := p.Client().Do(req)
	if err != nil {
		var re *RuleError
		if errors.As(err, &re) {
			return nil, 0, re
		}
		return nil, 0, refuse("source-exists", "GET %s: %v", u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, refuse("source-exists", "GET %s: HTTP %d", u.Redacted(), resp.StatusCode)
	}
	return resp.Body, resp.ContentLength, nil
}
