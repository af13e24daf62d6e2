package ui

import (
	"net/http/httptest"
	"testing"
)

func TestStreamingPaths(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/ws":                     true,
		"/api/v1/tasks/t-1/watch": true,
		"/api/v1/tasks/t-1":       false,
		"/api/v1/tasks":           false,
		"/api/v1/health":          false,
		"/metrics":                false,
	} {
		if got := streaming(httptest.NewRequest("GET", path, nil)); got != want {
			t.Errorf("streaming(%s) = %v, want %v", path, got, want)
		}
	}
}
