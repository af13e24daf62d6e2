package logring

import (
	"fmt"
	"reflect"
	"testing"
)

func TestRing(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		writes []string
		want   []string
	}{
		{name: "empty", size: 3, want: []string{}},
		{name: "under capacity", size: 3, writes: []string{"a\n", "b\n"}, want: []string{"a", "b"}},
		{name: "wraps", size: 3, writes: []string{"1\n2\n3\n4\n5\n"}, want: []string{"3", "4", "5"}},
		{name: "exactly full", size: 2, writes: []string{"x\ny\n"}, want: []string{"x", "y"}},
		{name: "partial lines joined", size: 3, writes: []string{"hel", "lo\nwor", "ld\nrest"}, want: []string{"hello", "world"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.size)
			for _, w := range tt.writes {
				if n, err := r.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := r.Lines(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lines() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRingConcurrent(t *testing.T) {
	r := New(50)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 100 {
				fmt.Fprintf(r, "g%d line %d\n", g, i)
				_ = r.Lines()
			}
		}()
	}
	for range 4 {
		<-done
	}
	if n := len(r.Lines()); n != 50 {
		t.Fatalf("%d lines, want 50", n)
	}
}
