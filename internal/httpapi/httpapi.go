// Package httpapi holds the JSON conventions lpmos's two HTTP APIs (the
// control plane and the regional agent API) share: strict request bodies,
// JSON error answers and the mapping of store errors to HTTP statuses.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// MaxBody caps every request body: a provisioning API has no business
// receiving more, and the cap keeps one client from eating memory.
const MaxBody = 1 << 20

// Error is an answer with an HTTP status and a message for a person.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Errorf builds an Error.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers {"error": msg}.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, wire.Error{Error: msg})
}

// Fail answers with e.
func Fail(w http.ResponseWriter, e *Error) { WriteError(w, e.Code, e.Msg) }

// Decode reads one JSON value of at most MaxBody bytes into v, strictly:
// a non-JSON content type (415), a larger body (413), malformed JSON,
// unknown fields, an empty body or trailing data (400) are refused.
func Decode(w http.ResponseWriter, r *http.Request, v any) *Error {
	return DecodeLimit(w, r, v, MaxBody)
}

// DecodeLimit is Decode with a body limit of max bytes instead of MaxBody.
func DecodeLimit(w http.ResponseWriter, r *http.Request, v any, max int64) *Error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, "content type %q: send application/json", ct)
	}
	if r.ContentLength > max {
		return Errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", max)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON value")
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", max)
	case errors.Is(err, io.EOF):
		return Errorf(http.StatusBadRequest, "invalid JSON body: the body is empty")
	}
	return Errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
}

// StoreError maps the store's errors to answers: unknown ids 404, bad
// values 400, state conflicts (naming the current status) and progress
// regressions 409; anything else means etcd did not answer: 503.
func StoreError(err error) *Error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, store.ErrInvalid):
		return Errorf(http.StatusBadRequest, "%v", err)
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrRegression):
		return Errorf(http.StatusConflict, "%v", err)
	case errors.Is(err, context.Canceled):
		return Errorf(499, "%v", err) // the client went away
	case store.IsNoSpace(err):
		return Errorf(http.StatusServiceUnavailable, "%s; retry in a minute: %v", store.NoSpaceMessage, err)
	}
	return Errorf(http.StatusServiceUnavailable, "store unavailable: %v", err)
}

// Bearer returns the token of "Authorization: Bearer <token>", or "".
func Bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
