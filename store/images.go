package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Image is one entry of the image catalog: /images/{os}/{version}.
type Image struct {
	OSType    string    `json:"os_type"`
	OSVersion string    `json:"os_version"`
	Source    string    `json:"source"`    // local file path or http(s) URL of the file as stored
	Format    string    `json:"format"`    // format of the source file: raw, gzip, xz, zstd or qcow2
	SHA256    string    `json:"sha256"`    // hex sha256 of the raw disk bytes
	Size      int64     `json:"size"`      // raw disk bytes
	FileSize  int64     `json:"file_size"` // bytes of the source file
	AddedAt   time.Time `json:"added_at"`
	// AgentFormat is what the region serves the agent: "raw" or "gzip"
	// (xz and zstd are decompressed on the fly, qcow2 is served from
	// Derived). Empty in entries written before it existed: then Format.
	AgentFormat string `json:"agent_format,omitempty"`
	// Derived is the file the region serves instead of Source (qcow2
	// converted at image add into gzip-compressed raw), inside the
	// images directory; removed with the entry.
	Derived string `json:"derived,omitempty"`
}

// Served is the format the agent receives.
func (img Image) Served() string {
	if img.AgentFormat != "" {
		return img.AgentFormat
	}
	return img.Format
}

// validSHA256 reports whether s is 64 hex digits.
func validSHA256(s string) bool {
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

// CheckImageName checks an image's os and version names (letters,
// digits, '.', '-', '_', at most 64).
func CheckImageName(osType, version string) error {
	if !validName(osType, 64) || !validName(version, 64) {
		return fmt.Errorf("%w: os %q version %q: use letters, digits, '.', '-' or '_'", ErrInvalid, osType, version)
	}
	return nil
}

// PutImage adds or replaces a catalog entry.
func (s *Store) PutImage(ctx context.Context, img Image) error {
	if !validName(img.OSType, 64) || !validName(img.OSVersion, 64) {
		return fmt.Errorf("%w: os %q version %q: use letters, digits, '.', '-' or '_'", ErrInvalid, img.OSType, img.OSVersion)
	}
	switch img.Format {
	case "raw", "gzip", "xz", "zstd", "qcow2":
	default:
		return fmt.Errorf("%w: image format %q: want raw, gzip, xz, zstd or qcow2", ErrInvalid, img.Format)
	}
	if img.AgentFormat != "" && img.AgentFormat != "raw" && img.AgentFormat != "gzip" {
		return fmt.Errorf("%w: image agent_format %q: want raw or gzip", ErrInvalid, img.AgentFormat)
	}
	if img.AgentFormat == "" && img.Format != "raw" && img.Format != "gzip" {
		return fmt.Errorf("%w: image format %q needs agent_format (raw or gzip)", ErrInvalid, img.Format)
	}
	if !validSHA256(img.SHA256) {
		return fmt.Errorf("%w: image sha256 %q is not 64 hex digits", ErrInvalid, img.SHA256)
	}
	if img.Size <= 0 {
		return fmt.Errorf("%w: image size %d: must be positive", ErrInvalid, img.Size)
	}
	if img.FileSize < 0 {
		return fmt.Errorf("%w: image file_size %d: must not be negative", ErrInvalid, img.FileSize)
	}
	if img.AddedAt.IsZero() {
		img.AddedAt = time.Now().UTC()
	}
	if _, err := s.cli.Put(ctx, imageKey(img.OSType, img.OSVersion), mustJSON(img)); err != nil {
		return fmt.Errorf("store image %s/%s: %w", img.OSType, img.OSVersion, err)
	}
	return nil
}

// GetImage reads one catalog entry.
func (s *Store) GetImage(ctx context.Context, osType, version string) (Image, error) {
	if !validName(osType, 64) || !validName(version, 64) {
		return Image{}, fmt.Errorf("%w: image %s/%s", ErrNotFound, osType, version)
	}
	resp, err := s.cli.Get(ctx, imageKey(osType, version))
	if err != nil {
		return Image{}, fmt.Errorf("read image %s/%s: %w", osType, version, err)
	}
	if len(resp.Kvs) == 0 {
		return Image{}, fmt.Errorf("%w: no image for %s %s (add one with: lpmos image add %s %s <file-or-url>)", ErrNotFound, osType, version, osType, version)
	}
	var img Image
	if err := json.Unmarshal(resp.Kvs[0].Value, &img); err != nil {
		return Image{}, fmt.Errorf("decode image %s/%s: %w", osType, version, err)
	}
	return img, nil
}

// ListImages returns the catalog.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	resp, err := s.cli.Get(ctx, prefixImages, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]Image, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var img Image
		if err := json.Unmarshal(kv.Value, &img); err != nil {
			s.log.Warn("store: undecodable image", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, img)
	}
	return out, nil
}

// DeleteImage removes a catalog entry and returns it. It is ErrNotFound
// when absent, and ErrConflict, naming the tasks, while an active task
// (pending to installing or stalled) installs that image. The delete is
// one transaction guarded by the entry's and the tasks' revisions, so a
// task created or retried meanwhile is seen.
func (s *Store) DeleteImage(ctx context.Context, osType, version string) (Image, error) {
	if !validName(osType, 64) || !validName(version, 64) {
		return Image{}, fmt.Errorf("%w: image %s/%s", ErrNotFound, osType, version)
	}
	key := imageKey(osType, version)
	for attempt := 0; attempt < 5; attempt++ {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return Image{}, fmt.Errorf("read image %s/%s: %w", osType, version, err)
		}
		if len(resp.Kvs) == 0 {
			return Image{}, fmt.Errorf("%w: no image for %s %s", ErrNotFound, osType, version)
		}
		var img Image
		if err := json.Unmarshal(resp.Kvs[0].Value, &img); err != nil {
			return Image{}, fmt.Errorf("decode image %s/%s: %w", osType, version, err)
		}
		tasks, rev, err := s.ListTasks(ctx, Filter{})
		if err != nil {
			return Image{}, err
		}
		var users []string
		for _, t := range tasks {
			if t.Status.Status.Active() && t.Spec.OSType == osType && t.Spec.OSVersion == version {
				users = append(users, fmt.Sprintf("%s (%s, %s)", t.ID, t.Spec.TargetMAC, t.Status.Status))
			}
		}
		if len(users) > 0 {
			return Image{}, fmt.Errorf("%w: image %s %s is used by active task(s) %s: wait for them to end or cancel them (lpmos task cancel ID)",
				ErrConflict, osType, version, strings.Join(users, ", "))
		}
		txn, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(prefixTasks), "<", rev+1).WithPrefix(),
		).Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return Image{}, fmt.Errorf("delete image %s/%s: %w", osType, version, err)
		}
		if txn.Succeeded {
			return img, nil
		}
	}
	return Image{}, fmt.Errorf("%w: image %s %s or the tasks kept changing: try again", ErrConflict, osType, version)
}
