// Package agentbin carries the lpmos agent (agent/cmd/lpmos-agent) inside
// the lpmos binary, so a lab box needs only lpmos and a kernel to build the
// agent's initramfs. The binaries are static, stripped and gzipped; they are
// generated from the agent source by `go generate ./...` and committed, so
// `go run . serve` works from a fresh clone. A test fails when the committed
// binaries no longer match the agent source.
package agentbin

//go:generate go run gen.go

import (
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"io"
	"slices"
)

//go:embed lpmos-agent-linux-*.gz
var files embed.FS

// Arches are the GOARCH values an agent is embedded for.
func Arches() []string { return []string{"amd64", "arm64"} }

// FileName is the name of the embedded (gzipped) agent for goarch.
func FileName(goarch string) string { return "lpmos-agent-linux-" + goarch + ".gz" }

// Binary returns the agent executable for goarch (linux, static).
func Binary(goarch string) ([]byte, error) {
	if !slices.Contains(Arches(), goarch) {
		return nil, fmt.Errorf("no embedded agent for %q (have %v)", goarch, Arches())
	}
	gz, err := files.ReadFile(FileName(goarch))
	if err != nil {
		return nil, fmt.Errorf("embedded agent %s: %w (run `go generate ./...`)", goarch, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("embedded agent %s: %w", goarch, err)
	}
	bin, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("embedded agent %s: %w", goarch, err)
	}
	return bin, nil
}
