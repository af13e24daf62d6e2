package install

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// GPT layout (UEFI spec 2.x, chapter 5). Offsets are within the header.
const (
	gptSignature      = "EFI PART"
	gptOffHeaderSize  = 12
	gptOffHeaderCRC   = 16
	gptOffMyLBA       = 24
	gptOffAlternate   = 32
	gptOffFirstUsable = 40
	gptOffLastUsable  = 48
	gptOffEntriesLBA  = 72
	gptOffNumEntries  = 80
	gptOffEntrySize   = 84
	gptOffEntriesCRC  = 88
	gptMinHeaderSize  = 92
)

// gpt is a parsed, CRC-checked primary GPT.
type gpt struct {
	sectorSize int64
	header     []byte // HeaderSize bytes
	entries    []byte // NumEntries * EntrySize bytes
}

func (g *gpt) u64(off int) uint64 { return binary.LittleEndian.Uint64(g.header[off:]) }
func (g *gpt) u32(off int) uint32 { return binary.LittleEndian.Uint32(g.header[off:]) }

// constError lets sentinel errors be constants rather than package vars.
type constError string

func (e constError) Error() string { return string(e) }

// errNoGPT means the disk has no GPT (raw or MBR-only image).
const errNoGPT = constError("no GPT")

// readGPT finds the primary GPT at LBA 1, trying 512-byte then 4096-byte
// sectors (a 4Kn image written to a file has no ioctl to ask), and checks
// both CRCs: relocating a damaged table would only spread the damage.
func readGPT(r io.ReaderAt) (*gpt, error) {
	for _, ss := range []int64{512, 4096} {
		sector := make([]byte, ss)
		if _, err := r.ReadAt(sector, ss); err != nil {
			if errors.Is(err, io.EOF) {
				continue
			}
			return nil, fmt.Errorf("reading GPT header: %w", err)
		}
		if string(sector[:8]) != gptSignature {
			continue
		}
		hsize := int64(binary.LittleEndian.Uint32(sector[gptOffHeaderSize:]))
		if hsize < gptMinHeaderSize || hsize > ss {
			return nil, fmt.Errorf("GPT header size %d invalid", hsize)
		}
		g := &gpt{sectorSize: ss, header: sector[:hsize]}
		if got, want := headerCRC(g.header), g.u32(gptOffHeaderCRC); got != want {
			return nil, fmt.Errorf("GPT header CRC %08x, stored %08x", got, want)
		}
		n, esz := int64(g.u32(gptOffNumEntries)), int64(g.u32(gptOffEntrySize))
		if esz < 128 || n*esz > 16<<20 {
			return nil, fmt.Errorf("GPT partition array %d x %d bytes invalid", n, esz)
		}
		g.entries = make([]byte, n*esz)
		if _, err := r.ReadAt(g.entries, int64(g.u64(gptOffEntriesLBA))*ss); err != nil {
			return nil, fmt.Errorf("reading GPT partition array: %w", err)
		}
		if got, want := crc32.ChecksumIEEE(g.entries), g.u32(gptOffEntriesCRC); got != want {
			return nil, fmt.Errorf("GPT partition array CRC %08x, stored %08x", got, want)
		}
		return g, nil
	}
	return nil, errNoGPT
}

// headerCRC is the CRC32 of the header with its own CRC field zeroed.
func headerCRC(h []byte) uint32 {
	c := bytes.Clone(h)
	binary.LittleEndian.PutUint32(c[gptOffHeaderCRC:], 0)
	return crc32.ChecksumIEEE(c)
}

// relocateBackupGPT moves the backup GPT (header and partition array) from
// the end of the image to the end of a larger disk and fixes the primary
// header to match, as `sgdisk -e` does. Without it firmware and the kernel
// see the backup header in the middle of the disk, complain that the GPT is
// corrupt, and the space after the image is unusable. It reports whether
// anything was changed.
func relocateBackupGPT(rw interface {
	io.ReaderAt
	io.WriterAt
}, diskSize int64) (bool, error) {
	g, err := readGPT(rw)
	if errors.Is(err, errNoGPT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ss := g.sectorSize
	lastLBA := uint64(diskSize/ss) - 1
	oldAlt := g.u64(gptOffAlternate)
	if oldAlt == lastLBA {
		return false, nil
	}
	if oldAlt > lastLBA {
		return false, fmt.Errorf("GPT backup header at LBA %d lies beyond the disk's last LBA %d", oldAlt, lastLBA)
	}
	arraySectors := (uint64(len(g.entries)) + uint64(ss) - 1) / uint64(ss)
	backupArrayLBA := lastLBA - arraySectors

	primary := bytes.Clone(g.header)
	binary.LittleEndian.PutUint64(primary[gptOffAlternate:], lastLBA)
	binary.LittleEndian.PutUint64(primary[gptOffLastUsable:], backupArrayLBA-1)
	binary.LittleEndian.PutUint32(primary[gptOffHeaderCRC:], headerCRC(primary))

	backup := bytes.Clone(primary)
	binary.LittleEndian.PutUint64(backup[gptOffMyLBA:], lastLBA)
	binary.LittleEndian.PutUint64(backup[gptOffAlternate:], 1)
	binary.LittleEndian.PutUint64(backup[gptOffEntriesLBA:], backupArrayLBA)
	binary.LittleEndian.PutUint32(backup[gptOffHeaderCRC:], headerCRC(backup))

	// Backup first, primary last: if power fails in between, the primary
	// still describes a consistent (old) layout.
	if _, err := rw.WriteAt(padSector(g.entries, int(arraySectors*uint64(ss))), int64(backupArrayLBA)*ss); err != nil {
		return false, fmt.Errorf("writing backup GPT partition array: %w", err)
	}
	if _, err := rw.WriteAt(padSector(backup, int(ss)), int64(lastLBA)*ss); err != nil {
		return false, fmt.Errorf("writing backup GPT header: %w", err)
	}
	if _, err := rw.WriteAt(padSector(primary, int(ss)), ss); err != nil {
		return false, fmt.Errorf("writing primary GPT header: %w", err)
	}
	// The old backup header now sits in usable space; left there, blkid and
	// some firmware would find a second, stale GPT.
	old := make([]byte, ss)
	if _, err := rw.ReadAt(old, int64(oldAlt)*ss); err == nil && string(old[:8]) == gptSignature {
		if _, err := rw.WriteAt(make([]byte, ss), int64(oldAlt)*ss); err != nil {
			return false, fmt.Errorf("clearing old backup GPT header: %w", err)
		}
	}
	if err := fixProtectiveMBR(rw, lastLBA); err != nil {
		return false, err
	}
	return true, nil
}

// fixProtectiveMBR grows the 0xEE entry of the protective MBR to cover the
// disk (capped at 2^32-1 sectors, as the spec says).
func fixProtectiveMBR(rw interface {
	io.ReaderAt
	io.WriterAt
}, lastLBA uint64) error {
	mbr := make([]byte, 512)
	if _, err := rw.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("reading protective MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa || mbr[446+4] != 0xee {
		return nil
	}
	size := min(lastLBA, 0xffffffff)
	binary.LittleEndian.PutUint32(mbr[446+12:], uint32(size))
	if _, err := rw.WriteAt(mbr[446+12:446+16], 446+12); err != nil {
		return fmt.Errorf("writing protective MBR: %w", err)
	}
	return nil
}

func padSector(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	out := make([]byte, n)
	copy(out, b)
	return out
}

// parseGUID turns the textual GUID into its on-disk form: the first three
// groups are little-endian, the last two big-endian.
func parseGUID(s string) ([16]byte, error) {
	var g [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		return g, fmt.Errorf("bad GUID %q", s)
	}
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}

func mustGUID(s string) [16]byte {
	g, err := parseGUID(s)
	if err != nil {
		panic(err) // only called with the literals above
	}
	return g
}
