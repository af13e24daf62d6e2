package imagesrc

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkServeDecompressed measures what one agent download of an xz or
// zstd image costs the region (decompression while serving, MB/s of disk
// bytes), and a resume at the middle (decompress-and-skip).
func BenchmarkServeDecompressed(b *testing.B) {
	raw := diskBytes(32 << 20)
	for _, format := range []string{XZ, Zstd, Gzip} {
		dir := b.TempDir()
		src := filepath.Join(dir, "d")
		if err := os.WriteFile(src, encode(b, format, raw), 0o644); err != nil {
			b.Fatal(err)
		}
		p := Policy{Dir: dir}
		b.Run(format+"/full", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				ds := p.NewDiskStream(context.Background(), src, format, int64(len(raw)))
				if n, err := io.Copy(io.Discard, ds); err != nil || n != int64(len(raw)) {
					b.Fatal(n, err)
				}
				ds.Close()
			}
		})
		b.Run(format+"/resume-at-half", func(b *testing.B) {
			b.SetBytes(int64(len(raw) / 2))
			for b.Loop() {
				ds := p.NewDiskStream(context.Background(), src, format, int64(len(raw)))
				ds.Seek(int64(len(raw)/2), io.SeekStart)
				if _, err := ds.Read(make([]byte, 1)); err != nil {
					b.Fatal(err)
				}
				ds.Close()
			}
		})
	}
}
