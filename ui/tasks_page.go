package ui

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lpmos/lpmos/store"
)

// Task lists (GET /api/v1/tasks, paged with ?limit=&continue=): answered
// from the store's task summaries (store/taskindex.go: one watch keeps
// them, a list reads no events and no hardware beyond its summary), read
// your writes.
const (
	maxPageLimit     = 1000
	defaultPageLimit = 100
)

// pageCursor is the position after the last task of a page (see
// store.Cursor: a walk sees each task that exists throughout exactly once).
type pageCursor = store.Cursor

func encodeCursor(c pageCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.Created.UnixNano(), 10) + "|" + c.ID))
}

func parseCursor(s string) (pageCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return pageCursor{}, errors.New("continue: not a token from a previous page")
	}
	ns, id, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return pageCursor{}, errors.New("continue: not a token from a previous page")
	}
	return pageCursor{Created: time.Unix(0, n).UTC(), ID: id}, nil
}

// pageParams reads ?limit= and ?continue=; paged is false for the
// unpaged list (neither given).
func pageParams(r *http.Request) (limit int, cur *pageCursor, paged bool, err error) {
	q := r.URL.Query()
	ls, cs := q.Get("limit"), q.Get("continue")
	if ls == "" && cs == "" {
		return 0, nil, false, nil
	}
	limit = defaultPageLimit
	if ls != "" {
		n, perr := strconv.Atoi(ls)
		if perr != nil || n < 1 || n > maxPageLimit {
			return 0, nil, true, fmt.Errorf("limit=%q: want 1 to %d", ls, maxPageLimit)
		}
		limit = n
	}
	if cs != "" {
		c, perr := parseCursor(cs)
		if perr != nil {
			return 0, nil, true, perr
		}
		cur = &c
	}
	return limit, cur, true, nil
}

// listTasksPage answers GET /api/v1/tasks (limit 0: every task) as
// TaskList, from the tasks' JSON the store's index keeps.
func (s *Server) listTasksPage(w http.ResponseWriter, r *http.Request, f store.Filter, limit int, cur *pageCursor) {
	tasks, rev, next, err := s.cfg.Store.ListSummariesJSON(r.Context(), f, limit, cur)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	n := 0
	for _, t := range tasks {
		n += len(t) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+128))
	buf.WriteString(`{"tasks":[`)
	for i, t := range tasks {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(t)
	}
	fmt.Fprintf(buf, `],"count":%d,"revision":%d`, len(tasks), rev)
	if next != nil {
		c, _ := json.Marshal(encodeCursor(*next))
		buf.WriteString(`,"continue":`)
		buf.Write(c)
	}
	buf.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}
