package ui

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
)

// Connections with one credential share its re-check; another credential
// gets its own; the answer is asked again once it is wsRecheck old.
func TestCredMemoSharesOneCheckPerCredential(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	ended := func(_ context.Context, r *http.Request) string {
		calls.Add(1)
		if r.Header.Get("Authorization") == "Bearer gone" {
			return "admin token rotated"
		}
		return ""
	}
	req := func(tok string) *http.Request {
		r, _ := http.NewRequest("GET", "/ws", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}
	var c credMemo
	ctx := context.Background()
	for range 1000 {
		if why := c.check(ctx, req("live"), ended); why != "" {
			t.Fatalf("live credential ended: %q", why)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("1000 connections with one token: %d checks, want 1", n)
	}
	if why := c.check(ctx, req("gone"), ended); why != "admin token rotated" {
		t.Fatalf("rotated token: %q", why)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("a second token: %d checks, want 2", n)
	}
	// Age the results: the next check asks again.
	c.mu.Lock()
	for k, res := range c.m {
		res.at = res.at.Add(-wsRecheck)
		c.m[k] = res
	}
	c.mu.Unlock()
	c.check(ctx, req("live"), ended)
	if n := calls.Load(); n != 3 {
		t.Fatalf("after wsRecheck: %d checks, want 3", n)
	}
}
