package ui

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// checkCreate refuses a task that could never run, before anything is
// written: a multicast or all-zero MAC (400), a region that no region
// process ever registered (422), an OS/version the image catalog lacks
// (422, unless the request says allow_missing_image). The spec's own
// field checks run first, so a malformed field is still its 400.
func (s *Server) checkCreate(ctx context.Context, spec store.Spec, allowMissingImage bool) *httpapi.Error {
	if err := spec.Validate(); err != nil {
		return httpapi.StoreError(err)
	}
	mac, err := net.ParseMAC(spec.TargetMAC)
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, "target_mac %q: %v", spec.TargetMAC, err)
	}
	switch {
	case mac.String() == "00:00:00:00:00:00":
		return httpapi.Errorf(http.StatusBadRequest, "target_mac %s is all zeros: give the MAC of the NIC the machine boots from", mac)
	case mac[0]&1 == 1:
		return httpapi.Errorf(http.StatusBadRequest, "target_mac %s is a multicast/broadcast address (first octet odd): give the unicast MAC of the NIC the machine boots from", mac)
	}
	known, err := s.cfg.Store.KnownRegions(ctx)
	if err != nil {
		return httpapi.StoreError(err)
	}
	if !slices.Contains(known, spec.RegionID) {
		have := "none has registered yet"
		if len(known) > 0 {
			have = "known: " + strings.Join(known, ", ")
		}
		return httpapi.Errorf(http.StatusUnprocessableEntity,
			"region %q is unknown (%s): a task runs only in a region that an `lpmos serve --region-id %s` has registered; fix region_id (CLI --region)",
			spec.RegionID, have, spec.RegionID)
	}
	if allowMissingImage {
		return nil
	}
	if _, err := s.cfg.Store.GetImage(ctx, spec.OSType, spec.OSVersion); errors.Is(err, store.ErrNotFound) {
		return httpapi.Errorf(http.StatusUnprocessableEntity,
			"no image for %s %s in the catalog (%s): add one with `lpmos image add %s %s <file-or-url>`, or create the task with allow_missing_image (CLI --allow-missing-image) and add the image before approving",
			spec.OSType, spec.OSVersion, s.imageNames(ctx), spec.OSType, spec.OSVersion)
	} else if err != nil {
		return httpapi.StoreError(err)
	}
	return nil
}

// imageNames lists the catalog for an error message.
func (s *Server) imageNames(ctx context.Context) string {
	imgs, err := s.cfg.Store.ListImages(ctx)
	if err != nil || len(imgs) == 0 {
		return "the catalog is empty"
	}
	names := make([]string, 0, len(imgs))
	for _, i := range imgs {
		names = append(names, fmt.Sprintf("%s %s", i.OSType, i.OSVersion))
	}
	return "have: " + strings.Join(names, ", ")
}
