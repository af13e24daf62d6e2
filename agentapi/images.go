package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
)

// isURL reports whether an image source is an http(s) URL rather than a
// local file.
func isURL(src string) bool { return imagesrc.IsURL(src) }

// servedFile is the local file the region serves for img, checked against
// the images policy (under --images-dir, symlinks resolved): the derived
// file of a converted image, else the source. A catalog entry written by
// an older version pointing anywhere else is refused here, and so is a
// file whose magic bytes are not the recorded format (a qcow2 recorded as
// raw before formats were recognised).
func (r *Region) servedFile(img store.Image) (string, error) {
	src, want := img.Source, img.Format
	if img.Derived != "" {
		src, want = img.Derived, img.Served()
	}
	path, err := r.cfg.Images.LocalPath(src)
	if err != nil {
		return "", err
	}
	if err := imagesrc.CheckFile(path, want); err != nil {
		return "", err
	}
	return path, nil
}

// fileChecks remembers the image files found servable in the last
// imageCheckFresh: a burst of approval answers (5,000 agents answered in
// a few seconds) checks each file once a second instead of resolving,
// opening and sniffing it for every agent. A failed check is not
// remembered; serving the image (serveImage) checks the file every time.
type fileChecks struct {
	mu sync.Mutex
	ok map[[2]string]time.Time // source or derived file, format -> when found servable
}

func (f *fileChecks) check(r *Region, img store.Image) error {
	if f == nil {
		_, err := r.servedFile(img)
		return err
	}
	key := [2]string{img.Source, img.Format}
	if img.Derived != "" {
		key = [2]string{img.Derived, img.Served()}
	}
	now := time.Now()
	f.mu.Lock()
	at, ok := f.ok[key]
	f.mu.Unlock()
	if ok && now.Sub(at) < imageCheckFresh {
		return nil
	}
	if _, err := r.servedFile(img); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ok == nil || len(f.ok) > 1024 {
		f.ok = map[[2]string]time.Time{}
	}
	f.ok[key] = now
	return nil
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
	img, reason, err := r.checkImage(ctx, sp.OSType, sp.OSVersion, &r.files)
	if err != nil || reason != "" {
		return nil, reason, err
	}
	return &wire.InstallSpec{
		OSType:            sp.OSType,
		OSVersion:         sp.OSVersion,
		ImageURL:          r.imageURL(sp.OSType, sp.OSVersion),
		ImageSHA256:       img.SHA256,
		ImageSize:         img.Size,
		ImageFormat:       img.Served(),
		Hostname:          sp.Hostname,
		SSHAuthorizedKeys: sp.SSHAuthorizedKeys,
		UserData:          sp.UserData,
		PowerManaged:      t.BMC != nil, // the region reboots it through its BMC (issue 13)
	}, "", nil
}

// checkImage reads the catalog entry of osType/version and checks that
// this region can serve it (its file readable under the images directory,
// or its URL allowed). A reason a person can act on is returned when it
// cannot; err is set only for store failures, which are worth a retry.
// files, when set, may answer for a file found servable in the last
// imageCheckFresh.
func (r *Region) checkImage(ctx context.Context, osType, version string, files *fileChecks) (store.Image, string, error) {
	img, err := r.st.GetImage(ctx, osType, version)
	if errors.Is(err, store.ErrNotFound) {
		return img, fmt.Sprintf("no image for %s %s: lpmos image add %s %s <file-or-url>", osType, version, osType, version), nil
	}
	if err != nil {
		return img, "", err
	}
	if img.Derived != "" || !isURL(img.Source) {
		if err := files.check(r, img); err != nil {
			if !imagesrc.IsRule(err) {
				r.log.Error("image: check source", "os", osType, "version", version, "err", err)
			}
			return img, fmt.Sprintf("image file %s of %s %s is not readable on region %s (%v): add it again with lpmos image add %s %s <file-or-url>",
				img.Source, osType, version, r.cfg.RegionID, err, osType, version), nil
		}
	} else if _, err := r.cfg.Images.CheckURL(ctx, img.Source); err != nil {
		return img, fmt.Sprintf("image URL of %s %s is refused by region %s (%v): add it again with lpmos image add %s %s <file-or-url>",
			osType, version, r.cfg.RegionID, err, osType, version), nil
	}
	return img, "", nil
}

// serveImage serves GET/HEAD /images/{os}/{version} in the format the
// agent writes (raw or gzip), with Range for resume:
//   - a local raw or gzip file, or the gzip file converted from a qcow2:
//     http.ServeContent (strong ETag for If-Range);
//   - an xz or zstd source (file or URL): decompressed on the fly and
//     served raw; a Range is served by decompressing and skipping;
//   - an http(s) raw or gzip source: proxied with the client's Range.
//
// Every source is checked again against the images policy here: only
// files under the images directory, only allowed URLs.
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
	refused := func(err error) {
		if imagesrc.IsRule(err) {
			r.log.Warn("image: source refused", "os", osType, "version", version, "source", img.Source, "err", err)
			httpapi.WriteError(w, http.StatusForbidden, fmt.Sprintf("the source of %s %s is refused by region %s: %v", osType, version, r.cfg.RegionID, err))
			return
		}
		r.log.Error("image: open", "os", osType, "version", version, "source", img.Source, "err", err)
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("image file of %s %s is not readable on region %s", osType, version, r.cfg.RegionID))
	}
	if img.Derived == "" && (img.Format == imagesrc.XZ || img.Format == imagesrc.Zstd) {
		r.serveDecompressed(w, req, img, refused)
		return
	}
	if img.Derived == "" && isURL(img.Source) {
		if _, err := r.cfg.Images.CheckURL(req.Context(), img.Source); err != nil {
			refused(err)
			return
		}
		r.proxyImage(w, req, img)
		return
	}
	path, err := r.servedFile(img)
	if err != nil {
		refused(err)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		refused(err)
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

// serveDecompressed serves the raw disk bytes of an xz or zstd source.
func (r *Region) serveDecompressed(w http.ResponseWriter, req *http.Request, img store.Image, refused func(error)) {
	src := img.Source
	var mod time.Time
	if !isURL(src) {
		path, err := r.servedFile(img)
		if err != nil {
			refused(err)
			return
		}
		st, err := os.Stat(path)
		if err != nil {
			refused(err)
			return
		}
		src, mod = path, st.ModTime()
	} else if _, err := r.cfg.Images.CheckURL(req.Context(), src); err != nil {
		refused(err)
		return
	}
	ds := r.cfg.Images.NewDiskStream(req.Context(), src, img.Format, img.Size)
	defer ds.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	// The disk bytes are named by their sha256; the source's time
	// changes the tag when a local file is replaced in place.
	w.Header().Set("ETag", fmt.Sprintf(`"%.16s-%x-%x"`, img.SHA256, img.Size, mod.UnixNano()))
	http.ServeContent(w, req, "", mod, ds)
}

func (r *Region) proxyImage(w http.ResponseWriter, req *http.Request, img store.Image) {
	src, err := url.Parse(img.Source)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadGateway, fmt.Sprintf("image source of %s %s is not a valid URL", img.OSType, img.OSVersion))
		return
	}
	rp := &httputil.ReverseProxy{
		// Every connection is checked at dial time: a host name that
		// resolves elsewhere after the check gains nothing.
		Transport: r.cfg.Images.Transport(),
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
