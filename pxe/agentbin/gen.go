//go:build ignore

// gen builds the lpmos agent for every embedded architecture, reproducibly
// (static, stripped, no build id, no VCS stamp, trimmed paths), and writes
// lpmos-agent-linux-<arch>.gz next to itself. Run it with `go generate ./...`
// from the module root, or `go run gen.go [-out DIR]` in this directory.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lpmos/lpmos/pxe/agentbin/srcdigest"
)

var arches = []string{"amd64", "arm64"}

func main() {
	out := flag.String("out", ".", "directory to write the gzipped agents to")
	raw := flag.Bool("raw", false, "write the plain executables (lpmos-agent-linux-<arch>) instead")
	flag.Parse()
	if err := run(*out, *raw); err != nil {
		fmt.Fprintln(os.Stderr, "agentbin/gen:", err)
		os.Exit(1)
	}
}

func run(out string, raw bool) error {
	tmp, err := os.MkdirTemp("", "lpmos-agentbin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return fmt.Errorf("go env GOVERSION: %w", err)
	}
	src, err := srcdigest.Compute("../..", "gen.go", strings.TrimSpace(string(goVersion)), arches)
	if err != nil {
		return err
	}
	rec := srcdigest.Record{Source: src, Binaries: map[string]string{}}
	for _, arch := range arches {
		bin := filepath.Join(tmp, "lpmos-agent-"+arch)
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=",
			"-o", bin, "github.com/lpmos/lpmos/agent/cmd/lpmos-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
			"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=-mod=readonly", "GOEXPERIMENT=")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build agent for %s: %w", arch, err)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		name := filepath.Join(out, "lpmos-agent-linux-"+arch)
		rec.Binaries[filepath.Base(name)] = fmt.Sprintf("%x", sha256.Sum256(data))
		if raw {
			if err := os.WriteFile(name, data, 0o755); err != nil {
				return err
			}
			continue
		}
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			return err
		}
		if _, err := zw.Write(data); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		if err := os.WriteFile(name+".gz", buf.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "agentbin: %s: %d bytes (%d gzipped)\n", name, len(data), buf.Len())
	}
	if !raw {
		// What the binaries were built from: the test compares it with the
		// source without rebuilding (srcdigest).
		if err := os.WriteFile(filepath.Join(out, srcdigest.FileName), []byte(rec.Format(arches)), 0o644); err != nil {
			return err
		}
	}
	return nil
}
