package imagesrc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
)

// DiskStream is an io.ReadSeeker over the decompressed bytes of an xz or
// zstd source, for http.ServeContent: Range requests (the agent resumes
// with them) are served by decompressing from the start and skipping to
// the offset. Reading forward never restarts; seeking backwards does.
type DiskStream struct {
	ctx    context.Context
	p      Policy
	src    string
	format string
	size   int64

	pos  int64 // logical position (Seek)
	rpos int64 // position of the open decoder
	raw  io.Closer
	disk io.ReadCloser
}

// NewDiskStream returns the disk bytes of src (format xz or zstd, size
// disk bytes as recorded in the catalog). The source is opened, through
// the policy, on the first Read.
func (p Policy) NewDiskStream(ctx context.Context, src, format string, size int64) *DiskStream {
	return &DiskStream{ctx: ctx, p: p, src: src, format: format, size: size}
}

// Seek implements io.Seeker over the disk bytes.
func (s *DiskStream) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += s.pos
	case io.SeekEnd:
		offset += s.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	s.pos = offset
	return offset, nil
}

// Read implements io.Reader over the disk bytes.
func (s *DiskStream) Read(b []byte) (int, error) {
	if s.pos >= s.size {
		return 0, io.EOF
	}
	if s.disk != nil && s.rpos > s.pos {
		s.closeStream()
	}
	if s.disk == nil {
		if err := s.open(); err != nil {
			return 0, err
		}
	}
	if s.rpos < s.pos {
		n, err := io.CopyN(io.Discard, s.disk, s.pos-s.rpos)
		s.rpos += n
		if err != nil {
			return 0, s.streamErr(err)
		}
	}
	if rest := s.size - s.pos; int64(len(b)) > rest {
		b = b[:rest]
	}
	n, err := s.disk.Read(b)
	s.pos += int64(n)
	s.rpos += int64(n)
	if err == io.EOF && s.pos < s.size {
		return n, s.streamErr(io.ErrUnexpectedEOF)
	}
	if err != nil && err != io.EOF {
		return n, s.streamErr(err)
	}
	return n, nil
}

func (s *DiskStream) streamErr(err error) error {
	return fmt.Errorf("%s image %s at disk byte %d: %w", s.format, s.src, s.rpos, err)
}

func (s *DiskStream) open() error {
	rc, _, err := s.p.Open(s.ctx, s.src)
	if err != nil {
		return err
	}
	disk, err := Decompress(s.format, bufio.NewReaderSize(rc, 1<<20))
	if err != nil {
		rc.Close()
		return err
	}
	s.raw, s.disk, s.rpos = rc, disk, 0
	return nil
}

func (s *DiskStream) closeStream() {
	if s.disk != nil {
		s.disk.Close()
		s.raw.Close()
		s.disk, s.raw = nil, nil
	}
}

// Close releases the source.
func (s *DiskStream) Close() error {
	s.closeStream()
	return nil
}
