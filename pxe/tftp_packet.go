package pxe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	tftpRRQ   = 1
	tftpWRQ   = 2
	tftpDATA  = 3
	tftpACK   = 4
	tftpERROR = 5
	tftpOACK  = 6
)

// TFTP error codes (RFC 1350, RFC 2347).
const (
	tftpErrUndefined    = 0
	tftpErrNotFound     = 1
	tftpErrAccess       = 2
	tftpErrIllegalOp    = 4
	tftpErrOptionRefuse = 8
)

// Option limits. blksize is RFC 2348's range; timeout is capped below RFC
// 2349's 255 s so that a client cannot hold a transfer slot for minutes per
// block (a larger value is left out of the OACK, the client keeps its own);
// windowsize (RFC 7440) is capped so that one ACK releases at most
// tftpMaxWindow blocks.
const (
	tftpMinBlksize = 8
	tftpMaxBlksize = 65464
	tftpMaxTimeout = 10
	tftpMaxWindow  = 64
	// tftpMaxRequest is the largest request read; RFC 1350 requests fit in
	// 512 bytes, RFC 2347 allows more, nothing sane needs more than this.
	tftpMaxRequest = 1024
)

// tftpRequest is a parsed RRQ or WRQ. Zero option fields were not asked
// for (or were asked with a value outside their range, which RFC 2347 lets
// the server ignore).
type tftpRequest struct {
	op         uint16
	file       string
	mode       string // lower case
	blksize    int
	timeout    int // seconds
	windowsize int
	tsize      bool
}

var errNotRequest = errors.New("not a TFTP read or write request")

// parseTFTPRequest parses a request packet: opcode, file name, mode and
// RFC 2347 options as NUL-terminated strings. Options are matched without
// regard to case; unknown options, repeated ones and out-of-range values are
// ignored; NUL padding after the last option (some PXE ROMs pad) is
// accepted.
func parseTFTPRequest(b []byte) (tftpRequest, error) {
	var r tftpRequest
	if len(b) < 2 {
		return r, errNotRequest
	}
	r.op = binary.BigEndian.Uint16(b)
	if r.op != tftpRRQ && r.op != tftpWRQ {
		return r, errNotRequest
	}
	if len(b) > tftpMaxRequest {
		return r, errors.New("request too long")
	}
	rest := b[2:]
	field := func() (string, bool) {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return "", false
		}
		s := string(rest[:i])
		rest = rest[i+1:]
		return s, true
	}
	var ok bool
	if r.file, ok = field(); !ok {
		return r, errors.New("file name not terminated")
	}
	mode, ok := field()
	if !ok {
		return r, errors.New("mode not terminated")
	}
	r.mode = strings.ToLower(mode)
	switch r.mode {
	case "octet", "netascii", "mail":
	default:
		return r, errors.New("unknown transfer mode")
	}
	seen := 0
	for len(rest) > 0 {
		name, ok := field()
		if !ok || name == "" {
			break // unterminated tail or padding
		}
		val, ok := field()
		if !ok {
			break
		}
		n, err := strconv.Atoi(val)
		opt := strings.ToLower(name)
		bit := 0
		switch opt {
		case "blksize":
			bit = 1
		case "tsize":
			bit = 2
		case "timeout":
			bit = 4
		case "windowsize":
			bit = 8
		}
		if bit == 0 || seen&bit != 0 {
			continue
		}
		seen |= bit
		if err != nil || n < 0 {
			continue
		}
		switch opt {
		case "blksize":
			if n >= tftpMinBlksize {
				r.blksize = min(n, tftpMaxBlksize) // RFC 2348: the server may answer with less
			}
		case "tsize":
			r.tsize = true
		case "timeout":
			if n >= 1 && n <= tftpMaxTimeout {
				r.timeout = n
			}
		case "windowsize":
			if n >= 1 {
				r.windowsize = min(n, tftpMaxWindow) // RFC 7440: the server may answer with less
			}
		}
	}
	return r, nil
}

// appendTFTPError appends an ERROR packet; msg is cut to keep the packet
// small whatever the caller passes.
func appendTFTPError(b []byte, code uint16, msg string) []byte {
	if len(msg) > 100 {
		msg = msg[:100]
	}
	b = binary.BigEndian.AppendUint16(b, tftpERROR)
	b = binary.BigEndian.AppendUint16(b, code)
	b = append(b, msg...)
	return append(b, 0)
}

// appendTFTPOACK appends an OACK for the options accepted (non-zero
// fields), in a fixed order; size is the tsize answered.
func appendTFTPOACK(b []byte, blksize, timeout, windowsize int, tsize bool, size int64) []byte {
	b = binary.BigEndian.AppendUint16(b, tftpOACK)
	opt := func(name string, v int64) {
		b = append(b, name...)
		b = append(b, 0)
		b = strconv.AppendInt(b, v, 10)
		b = append(b, 0)
	}
	if blksize > 0 {
		opt("blksize", int64(blksize))
	}
	if tsize {
		opt("tsize", size)
	}
	if timeout > 0 {
		opt("timeout", int64(timeout))
	}
	if windowsize > 0 {
		opt("windowsize", int64(windowsize))
	}
	return b
}
