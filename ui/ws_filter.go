package ui

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// wsFilter reads /ws?status=a,b&region=r&task=id1,id2 (each may also be
// repeated): the client's view. No parameters: everything.
func wsFilter(r *http.Request) (SubFilter, error) {
	q := r.URL.Query()
	list := func(name string) []string {
		var out []string
		for _, v := range q[name] {
			for _, x := range strings.Split(v, ",") {
				if x = strings.TrimSpace(x); x != "" {
					out = append(out, x)
				}
			}
		}
		return out
	}
	var f SubFilter
	for _, st := range list("status") {
		if !store.Status(st).Valid() {
			return f, fmt.Errorf("status=%q: unknown status (one of %v)", st, wire.AllStatuses)
		}
		f.Status = append(f.Status, store.Status(st))
	}
	f.Region = strings.TrimSpace(q.Get("region"))
	f.Tasks = list("task")
	if len(f.Tasks) > 1000 {
		return f, fmt.Errorf("task=: %d task ids, at most 1000", len(f.Tasks))
	}
	return f, nil
}
