package imagesrc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A URL source is checked at `image add` like a file: a URL that does not
// answer 200 is refused (source-exists), one that does is read once and its
// disk size and sha256 computed, decompressed when it is compressed; an
// empty one is refused. (The origin is on loopback, so the policy needs
// the operator's allow flag.)
func TestInspectURL(t *testing.T) {
	raw := diskBytes(256 << 10)
	files := map[string][]byte{"/disk.raw": raw, "/disk.raw.gz": encode(t, Gzip, raw), "/empty.raw": {}}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	defer origin.Close()
	sum := sha256.Sum256(raw)
	want := hex.EncodeToString(sum[:])
	p := Policy{AllowLocalURLs: true}
	ctx := context.Background()

	for _, path := range []string{"/disk.raw", "/disk.raw.gz"} {
		info, err := p.Inspect(ctx, origin.URL+path, "os_1")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if info.Size != int64(len(raw)) || info.SHA256 != want || info.FileSize != int64(len(files[path])) || info.Source != origin.URL+path {
			t.Errorf("%s: %+v, want size %d sha256 %s", path, info, len(raw), want)
		}
	}
	_, err := p.Inspect(ctx, origin.URL+"/missing.raw", "os_1")
	wantRule(t, err, "source-exists", "404")
	_, err = p.Inspect(ctx, origin.URL+"/empty.raw", "os_1")
	wantRule(t, err, "source-not-empty")
	// Without the allow flag the same origin is refused before any request.
	_, err = Policy{}.Inspect(ctx, origin.URL+"/disk.raw", "os_1")
	wantRule(t, err, "url-address")
}
