package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// isURL reports whether an image source is an http(s) URL rather than a
// local file.
func isURL(src string) bool {
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// imageURL is where this region serves an image to its agents.
func (r *Region) imageURL(osType, version string) string {
	return r.cfg.PublicURL + wire.PathImages + url.PathEscape(osType) + "/" + url.PathEscape(version)
}

// installSpec builds what an approved task's agent installs. A reason a
// person can act on is returned (and no spec) when the image cannot be
// served; err is set only for store failures, which are worth a retry.
func (r *Region) installSpec(ctx context.Context, t store.Task) (*wire.InstallSpec, string, error) {
	sp := t.Spec
	img, err := r.st.GetImage(ctx, sp.OSType, sp.OSVersion)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Sprintf("no image for %s %s: lpmos image add %s %s <file-or-url>", sp.OSType, sp.OSVersion, sp.OSType, sp.OSVersion), nil
	}
	if err != nil {
		return nil, "", err
	}
	if !isURL(img.Source) {
		st, err := os.Stat(img.Source)
		if err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Sprintf("image file %s of %s %s is not readable on region %s: add it again with lpmos image add %s %s <file-or-url>",
				img.Source, sp.OSType, sp.OSVersion, r.cfg.RegionID, sp.OSType, sp.OSVersion), nil
		}
	}
	return &wire.InstallSpec{
		OSType:            sp.OSType,
		OSVersion:         sp.OSVersion,
		ImageURL:          r.imageURL(sp.OSType, sp.OSVersion),
		ImageSHA256:       img.SHA256,
		ImageSize:         img.Size,
		ImageFormat:       img.Format,
		Hostname:          sp.Hostname,
		SSHAuthorizedKeys: sp.SSHAuthorizedKeys,
		UserData:          sp.UserData,
	}, "", nil
}

// serveImage serves GET/HEAD /images/{os}/{version}: a local file with
// Range (http.ServeContent, strong ETag for If-Range), or an http(s) source
// proxied with the client's Range headers so the agent resumes the same way.
func (r *Region) serveImage(w http.ResponseWriter, req *http.Request) {
	osType, version := chi.URLParam(req, "os"), chi.URLParam(req, "version")
	img, err := r.st.GetImage(req.Context(), osType, version)
	if errors.Is(err, store.ErrNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		r.log.Error("image: read catalog", "os", osType, "version", version, "err", err)
		httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot read the image catalog")
		return
	}
	if isURL(img.Source) {
		r.proxyImage(w, req, img)
		return
	}
	f, err := os.Open(img.Source)
	if err != nil {
		r.log.Error("image: open", "source", img.Source, "err", err)
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("image file of %s %s is not readable on region %s", osType, version, r.cfg.RegionID))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("image file of %s %s is not a regular file", osType, version))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", fmt.Sprintf(`"%.16s-%x-%x"`, img.SHA256, st.Size(), st.ModTime().UnixNano()))
	http.ServeContent(w, req, "", st.ModTime(), f)
}

func (r *Region) proxyImage(w http.ResponseWriter, req *http.Request, img store.Image) {
	src, err := url.Parse(img.Source)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadGateway, fmt.Sprintf("image source of %s %s is not a valid URL", img.OSType, img.OSVersion))
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = src
			pr.Out.Host = src.Host
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			r.log.Error("image: proxy", "source", img.Source, "err", err)
			httpapi.WriteError(w, http.StatusBadGateway, fmt.Sprintf("cannot fetch the image of %s %s from its source", img.OSType, img.OSVersion))
		},
	}
	rp.ServeHTTP(w, req)
}
