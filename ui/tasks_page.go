package ui

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lpmos/lpmos/store"
)

// Paged task lists (GET /api/v1/tasks?limit=&continue=): served from the
// hub's live view (one watch keeps it current), so a page costs no etcd
// read and no decoding; the unpaged list stays the etcd read it was.
const (
	maxPageLimit     = 1000
	defaultPageLimit = 100
)

// pageCursor is the position after the last task of a page: the list's
// order is newest first (created_at descending, then id), which a task
// never changes, so a walk sees each task that exists throughout exactly
// once, whatever is created or deleted meanwhile.
type pageCursor struct {
	created time.Time
	id      string
}

func (c pageCursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.created.UnixNano(), 10) + "|" + c.id))
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
	return pageCursor{created: time.Unix(0, n).UTC(), id: id}, nil
}

// after reports whether task t sorts after cursor position c.
func (c pageCursor) after(t *store.Task) bool {
	if !t.Spec.CreatedAt.Equal(c.created) {
		return t.Spec.CreatedAt.Before(c.created)
	}
	return t.ID > c.id
}

func matchFilter(f store.Filter, t *store.Task) bool {
	return (f.Status == "" || t.Status.Status == f.Status) &&
		(f.Region == "" || t.Spec.RegionID == f.Region) &&
		(f.MAC == "" || t.Spec.TargetMAC == f.MAC)
}

// tasksPage returns up to limit tasks matching f after cursor cur (nil:
// from the newest), the live view's revision, and the cursor of the next
// page (nil at the end).
func (h *Hub) tasksPage(f store.Filter, limit int, cur *pageCursor) ([]store.Task, int64, *pageCursor) {
	h.mu.Lock()
	defer h.mu.Unlock()
	match := make([]*store.Task, 0, len(h.tasks))
	for _, t := range h.tasks {
		if t.complete && matchFilter(f, &t.Task) && (cur == nil || cur.after(&t.Task)) {
			match = append(match, &t.Task)
		}
	}
	less := func(a, b *store.Task) bool {
		if !a.Spec.CreatedAt.Equal(b.Spec.CreatedAt) {
			return a.Spec.CreatedAt.After(b.Spec.CreatedAt)
		}
		return a.ID < b.ID
	}
	// A full sort of pointers is ~1-3 ms per 10,000 tasks.
	sort.Slice(match, func(i, j int) bool { return less(match[i], match[j]) })
	page := match[:min(limit, len(match))]
	out := make([]store.Task, len(page))
	for i, t := range page {
		out[i] = *t
	}
	var next *pageCursor
	if len(match) > limit && len(out) > 0 {
		last := out[len(out)-1]
		next = &pageCursor{created: last.Spec.CreatedAt, id: last.ID}
	}
	return out, h.rev, next
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

// listTasksPage answers a paged GET /api/v1/tasks from the live view.
func (s *Server) listTasksPage(w http.ResponseWriter, r *http.Request, f store.Filter, limit int, cur *pageCursor) {
	select {
	case <-s.hub.ready:
	case <-r.Context().Done():
		return
	case <-time.After(10 * time.Second):
		writeError(w, http.StatusServiceUnavailable, errors.New("the live view is still loading: retry"))
		return
	}
	tasks, rev, next := s.hub.tasksPage(f, limit, cur)
	out := TaskList{Tasks: tasks, Count: len(tasks), Revision: rev}
	if next != nil {
		out.Continue = next.encode()
	}
	writeJSON(w, http.StatusOK, out)
}
