// Package health keeps the state of every service of one lpmos process, so
// /api/v1/health and the dashboard can say what runs, what failed and why.
package health

import (
	"sort"
	"sync"
	"time"
)

// States a service can be in.
const (
	Starting = "starting"
	Running  = "running"
	Degraded = "degraded" // running, but something it depends on fails
	Failed   = "failed"
	Stopped  = "stopped"
	Disabled = "disabled"
	External = "external" // provided by something outside this process
)

// Service is one service's reported state.
type Service struct {
	Name   string    `json:"name"`
	State  string    `json:"state"`
	Error  string    `json:"error,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// Registry is safe for concurrent use. The zero value is ready.
type Registry struct {
	mu       sync.Mutex
	services map[string]Service
	sources  []func() []Service
}

// AddSource adds services whose state another package keeps; Snapshot
// asks it each time.
func (r *Registry) AddSource(f func() []Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sources = append(r.sources, f)
}

// Set records a service's state; err may be nil.
func (r *Registry) Set(name, state string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.services == nil {
		r.services = map[string]Service{}
	}
	s := Service{Name: name, State: state, Since: time.Now().UTC()}
	if err != nil {
		s.Error = err.Error()
	}
	if old, ok := r.services[name]; ok && old.State == s.State && old.Error == s.Error {
		s.Since = old.Since
		s.Detail = old.Detail
	}
	r.services[name] = s
}

// SetDetail attaches a human-readable detail (an address, a count).
func (r *Registry) SetDetail(name, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.services[name]; ok {
		s.Detail = detail
		r.services[name] = s
	}
}

// Snapshot returns every service, sorted by name.
func (r *Registry) Snapshot() []Service {
	r.mu.Lock()
	out := make([]Service, 0, len(r.services))
	for _, s := range r.services {
		out = append(out, s)
	}
	sources := append([]func() []Service(nil), r.sources...)
	r.mu.Unlock()
	for _, src := range sources {
		out = append(out, src()...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Overall is "ok" when every service runs (or is disabled or external),
// else "degraded".
func Overall(services []Service) string {
	for _, s := range services {
		if s.State != Running && s.State != Disabled && s.State != External {
			return "degraded"
		}
	}
	return "ok"
}
