package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
)

// addImage is POST /api/v1/images. The server, not only the CLI, checks
// the source against the images policy (a local file under the images
// directory, an allowed http(s) URL), reads it fully to learn its format
// (magic bytes), the size and sha256 of its disk bytes (a corrupt stream
// is refused), converts qcow2, and checks the sha256 and size the request
// gives, if any. Every refusal is a 400 naming the rule.
func (s *Server) addImage(w http.ResponseWriter, r *http.Request) {
	var req AddImageRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := store.CheckImageName(req.OSType, req.OSVersion); err != nil {
		writeStoreError(w, err)
		return
	}
	if req.Source == "" {
		writeError(w, http.StatusBadRequest, errors.New("source-given: missing field: source (a file under the images directory or an http(s) URL)"))
		return
	}
	if req.SHA256 != "" && !validHex64(req.SHA256) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("sha256-format: sha256 %q is not 64 hex digits (leave it out to have it computed)", req.SHA256))
		return
	}
	if req.Size < 0 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("size-positive: size %d: give the disk bytes as a positive number (or leave it out to have it computed)", req.Size))
		return
	}
	info, err := s.cfg.Images.Inspect(r.Context(), req.Source, req.OSType+"_"+req.OSVersion)
	if err != nil {
		if imagesrc.IsRule(err) {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		s.log.Error("image add: read source", "source", req.Source, "error", err)
		writeError(w, http.StatusInternalServerError, fmt.Errorf("read image source: %w", err))
		return
	}
	dropDerived := func() {
		if info.Derived != "" {
			s.removeDerived(info.Derived)
		}
	}
	if req.SHA256 != "" && !strings.EqualFold(req.SHA256, info.SHA256) {
		dropDerived()
		writeError(w, http.StatusBadRequest, fmt.Errorf("sha256-match: the disk bytes of %s hash to %s, not %s", req.Source, info.SHA256, req.SHA256))
		return
	}
	if req.Size != 0 && req.Size != info.Size {
		dropDerived()
		writeError(w, http.StatusBadRequest, fmt.Errorf("size-match: %s holds %d disk bytes, not %d", req.Source, info.Size, req.Size))
		return
	}
	old, oldErr := s.cfg.Store.GetImage(r.Context(), req.OSType, req.OSVersion)
	img := store.Image{
		OSType: req.OSType, OSVersion: req.OSVersion, Source: info.Source,
		Format: info.Format, AgentFormat: info.AgentFormat, Derived: info.Derived,
		SHA256: info.SHA256, Size: info.Size, FileSize: info.FileSize,
	}
	// The request's context may be cancelled by now; the file is
	// converted, so record it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	if err := s.cfg.Store.PutImage(ctx, img); err != nil {
		dropDerived()
		writeStoreError(w, err)
		return
	}
	if oldErr == nil && old.Derived != "" && old.Derived != img.Derived {
		s.removeDerived(old.Derived)
	}
	got, err := s.cfg.Store.GetImage(ctx, img.OSType, img.OSVersion)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("image added", "os", got.OSType, "version", got.OSVersion, "format", got.Format, "agent_format", got.AgentFormat, "size", got.Size, "source", got.Source)
	writeJSON(w, http.StatusCreated, got)
}

// deleteImage is DELETE /api/v1/images/{os}/{version}: 404 when absent,
// 409 naming the tasks while active tasks install it. The converted file
// of a qcow2 is removed with the entry; the source file is the operator's.
func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	img, err := s.cfg.Store.DeleteImage(r.Context(), chi.URLParam(r, "os"), chi.URLParam(r, "version"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if img.Derived != "" {
		s.removeDerived(img.Derived)
	}
	s.log.Info("image removed", "os", img.OSType, "version", img.OSVersion, "source", img.Source)
	writeJSON(w, http.StatusOK, img)
}

// removeDerived removes a file lpmos converted, only if it lies in the
// derived directory of the images directory.
func (s *Server) removeDerived(path string) {
	resolved, err := s.cfg.Images.LocalPath(path)
	if err != nil {
		s.log.Warn("image: converted file not removed", "path", path, "error", err)
		return
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(s.cfg.Images.Dir, imagesrc.DerivedDir))
	if err != nil || filepath.Dir(resolved) != dir {
		s.log.Warn("image: not removing a file outside the converted-images directory", "path", path)
		return
	}
	if err := os.Remove(resolved); err != nil {
		s.log.Warn("image: remove converted file", "path", resolved, "error", err)
	}
}

func validHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}
