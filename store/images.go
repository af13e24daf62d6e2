package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Image is one entry of the image catalog: /images/{os}/{version}.
type Image struct {
	OSType    string    `json:"os_type"`
	OSVersion string    `json:"os_version"`
	Source    string    `json:"source"`    // local file path or http(s) URL of the file as stored
	Format    string    `json:"format"`    // "raw" or "gzip"
	SHA256    string    `json:"sha256"`    // hex sha256 of the raw disk bytes
	Size      int64     `json:"size"`      // raw disk bytes
	FileSize  int64     `json:"file_size"` // bytes of the source file
	AddedAt   time.Time `json:"added_at"`
}

// PutImage adds or replaces a catalog entry.
func (s *Store) PutImage(ctx context.Context, img Image) error {
	if !validName(img.OSType, 64) || !validName(img.OSVersion, 64) {
		return fmt.Errorf("%w: os %q version %q: use letters, digits, '.', '-' or '_'", ErrInvalid, img.OSType, img.OSVersion)
	}
	if img.Format != "raw" && img.Format != "gzip" {
		return fmt.Errorf("%w: image format %q: want raw or gzip", ErrInvalid, img.Format)
	}
	if len(img.SHA256) != 64 {
		return fmt.Errorf("%w: image sha256 %q is not 64 hex digits", ErrInvalid, img.SHA256)
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
