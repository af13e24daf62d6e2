package ui

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// wsOriginAllowed refuses, with the API's JSON error, a browser page of
// another origin opening /ws (the websocket library would answer plain
// text). Clients that send no Origin (CLI, benchmarks) pass, as with the
// library's own check, which still runs after this one.
func wsOriginAllowed(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err == nil && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Errorf("websocket from origin %q refused: /ws accepts pages of this server (%s) only", origin, r.Host))
	return false
}

// snapshotPrefix starts every encoded Snapshot (its first fields).
var snapshotPrefix = []byte(`{"type":"snapshot",`)

// withFreshServerTime returns msg with the snapshot's server_time set to
// now: the hub encodes a snapshot once and hands the same bytes to every
// client until the state changes, so the time in them can be minutes old.
// msg itself (shared) is never modified; other messages pass unchanged.
func withFreshServerTime(msg []byte, now time.Time) []byte {
	if !bytes.HasPrefix(msg, snapshotPrefix) {
		return msg
	}
	head := msg[:min(len(msg), 256)]
	key := []byte(`"server_time":"`)
	i := bytes.Index(head, key)
	if i < 0 {
		return msg
	}
	start := i + len(key)
	end := bytes.IndexByte(msg[start:], '"')
	if end < 0 {
		return msg
	}
	stamp := now.UTC().Format(time.RFC3339Nano)
	out := make([]byte, 0, len(msg)+len(stamp))
	out = append(out, msg[:start]...)
	out = append(out, stamp...)
	return append(out, msg[start+end:]...)
}
