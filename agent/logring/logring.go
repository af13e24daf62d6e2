// Package logring keeps the last lines of the agent's log so a failure
// report can carry them: the operator sees why a machine failed without a
// serial console.
package logring

import (
	"bytes"
	"sync"
)

// Ring is an io.Writer that remembers the last N complete lines written
// to it. Put it behind a slog handler next to the console.
type Ring struct {
	mu      sync.Mutex
	lines   []string
	next    int
	full    bool
	partial []byte
}

// New returns a Ring holding up to n lines (n >= 1).
func New(n int) *Ring {
	return &Ring{lines: make([]string, max(n, 1))}
}

// Write stores every complete line of p; a trailing partial line waits for
// its newline.
func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data := append(r.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		r.add(string(data[:i]))
		data = data[i+1:]
	}
	r.partial = append([]byte(nil), data...)
	return len(p), nil
}

func (r *Ring) add(line string) {
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
}

// Lines returns the remembered lines, oldest first.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]string{}, r.lines[:r.next]...)
	}
	return append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
}
