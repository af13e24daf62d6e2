package ui

import (
	"bufio"
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
// TaskList, from the tasks' JSON the store's index keeps, written as the
// store hands it over (store.EachSummaryJSON marshals the tasks changed
// since the last list ahead of the writer): a list of 10,000 tasks is
// never one buffer of all of them, and the client reads the first tasks
// while the last are being marshalled.
func (s *Server) listTasksPage(w http.ResponseWriter, r *http.Request, f store.Filter, limit int, cur *pageCursor) {
	var bw *bufio.Writer
	begin := func() {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		bw = bufio.NewWriterSize(w, 64<<10)
		bw.WriteString(`{"tasks":[`)
	}
	n, rev, next, err := s.cfg.Store.EachSummaryJSON(r.Context(), f, limit, cur, func(js json.RawMessage) error {
		if bw == nil {
			begin()
		} else {
			bw.WriteByte(',')
		}
		_, err := bw.Write(js)
		return err
	})
	if err != nil {
		if bw == nil { // nothing written yet: the selection failed
			writeStoreError(w, err)
		}
		return // else the client went away mid-list
	}
	if bw == nil {
		begin()
	}
	fmt.Fprintf(bw, `],"count":%d,"revision":%d`, n, rev)
	if next != nil {
		c, _ := json.Marshal(encodeCursor(*next))
		bw.WriteString(`,"continue":`)
		bw.Write(c)
	}
	bw.WriteString("}\n")
	_ = bw.Flush()
}
