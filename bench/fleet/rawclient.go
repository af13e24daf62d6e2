package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// rawConn is one agent's own keep-alive connection for its progress
// reports (-raw-client): the request is written and the answer read on the
// agent's goroutine, without net/http's transport, whose read and write
// loops add two goroutine hand-offs to every request. The generator shares
// the two cores with lpmos; what it spends per report is taken from
// lpmos's share (a real fleet's agents run on their own machines).
type rawConn struct {
	src, addr string // local source address, server host:port
	c         net.Conn
	br        *bufio.Reader
}

func (r *rawConn) dial() error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(r.src)}, Timeout: 30 * time.Second}
	c, err := d.Dial("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("dial %s from %s: %w", r.addr, r.src, err)
	}
	r.c, r.br = c, bufio.NewReaderSize(c, 4096)
	return nil
}

// do sends req, a whole HTTP/1.1 request, and reads the answer's status
// code and body into body. A connection that fails before an answer
// (closed by the server while idle) is dialled again and the request sent
// once more.
func (r *rawConn) do(req []byte, body *bytes.Buffer) (int, error) {
	for try := 0; ; try++ {
		if r.c == nil {
			if err := r.dial(); err != nil {
				return 0, err
			}
		}
		code, closeAfter, err := r.roundTrip(req, body)
		if err == nil && !closeAfter {
			return code, nil
		}
		r.c.Close()
		r.c = nil
		if err == nil || try > 0 || errors.Is(err, errAnswer) {
			return code, err
		}
	}
}

var errAnswer = errors.New("raw client: unexpected answer")

func (r *rawConn) roundTrip(req []byte, body *bytes.Buffer) (code int, closeAfter bool, err error) {
	if err := r.c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		return 0, false, err
	}
	if _, err := r.c.Write(req); err != nil {
		return 0, false, err
	}
	line, err := r.br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("%w: status line %q", errAnswer, line)
	}
	if code, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, false, fmt.Errorf("%w: status line %q", errAnswer, line)
	}
	n := -1
	for {
		h, err := r.br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(bytes.TrimSpace(h)) == 0 {
			break
		}
		name, val, _ := bytes.Cut(h, []byte(":"))
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if n, err = strconv.Atoi(string(val)); err != nil {
				return 0, false, fmt.Errorf("%w: %q", errAnswer, h)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, false, fmt.Errorf("%w: %q (only answers with a Content-Length are read)", errAnswer, h)
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(val, []byte("close")):
			closeAfter = true
		}
	}
	if n < 0 {
		return 0, false, fmt.Errorf("%w: no Content-Length", errAnswer)
	}
	body.Reset()
	if _, err := io.CopyN(body, r.br, int64(n)); err != nil {
		return 0, false, err
	}
	return code, closeAfter, nil
}

// appendRequest appends an HTTP/1.1 request with a JSON body to b.
func appendRequest(b []byte, method, host, path, auth string, body []byte) []byte {
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	if auth != "" {
		b = append(b, "\r\nAuthorization: "...)
		b = append(b, auth...)
	}
	if body != nil {
		b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
	}
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}
