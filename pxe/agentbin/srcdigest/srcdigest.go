// Package srcdigest names what an embedded agent binary is built from: the
// Go toolchain, the go.mod language lines, the generator (its build flags)
// and every non-standard-library source file of agent/cmd/lpmos-agent for
// each architecture. gen.go records it next to the binaries; the agentbin
// test recomputes it in a second (`go list`, no build) instead of
// rebuilding the agent for every architecture under -race.
package srcdigest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FileName is the record gen.go writes next to the binaries.
const FileName = "agent-source.sha256"

const agentPkg = "github.com/lpmos/lpmos/agent/cmd/lpmos-agent"

// Compute returns the hex sha256 of the agent's inputs. genFile is gen.go,
// goVersion the toolchain that builds (runtime.Version() or `go env
// GOVERSION`), modDir the module root.
func Compute(modDir, genFile, goVersion string, arches []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "toolchain %s\n", goVersion)
	mod, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("read go.mod: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(mod))
	for sc.Scan() { // only what changes how the agent compiles: its deps are stdlib
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "go ") || strings.HasPrefix(l, "toolchain ") || strings.HasPrefix(l, "module ") {
			fmt.Fprintf(h, "go.mod %s\n", l)
		}
	}
	gen, err := os.ReadFile(genFile)
	if err != nil {
		return "", fmt.Errorf("read generator: %w", err)
	}
	fmt.Fprintf(h, "gen.go %x\n", sha256.Sum256(gen))
	for _, arch := range arches {
		cmd := exec.Command("go", "list", "-deps", "-f",
			`{{if not .Standard}}{{.ImportPath}}|{{.Dir}}|{{join .GoFiles ","}}|{{join .EmbedFiles ","}}{{end}}`, agentPkg)
		cmd.Dir = modDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=-mod=readonly")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("go list the agent's packages for %s: %w\n%s", arch, err, stderr.String())
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			parts := strings.Split(line, "|")
			if len(parts) != 4 {
				continue
			}
			fmt.Fprintf(h, "arch %s package %s\n", arch, parts[0])
			for _, f := range append(strings.Split(parts[2], ","), strings.Split(parts[3], ",")...) {
				if f == "" {
					continue
				}
				data, err := os.ReadFile(filepath.Join(parts[1], f))
				if err != nil {
					return "", fmt.Errorf("read agent source: %w", err)
				}
				fmt.Fprintf(h, "file %s %x\n", f, sha256.Sum256(data))
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Record is the content of FileName: the source digest and the sha256 of
// each raw binary built from it.
type Record struct {
	Source   string
	Binaries map[string]string // file name (lpmos-agent-linux-<arch>) -> hex sha256
}

// Format renders r as the file's lines.
func (r Record) Format(arches []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "source %s\n", r.Source)
	for _, a := range arches {
		name := "lpmos-agent-linux-" + a
		fmt.Fprintf(&b, "%s %s\n", name, r.Binaries[name])
	}
	return b.String()
}

// Parse reads a Format'ted record.
func Parse(data []byte) (Record, error) {
	r := Record{Binaries: map[string]string{}}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			return Record{}, fmt.Errorf("%s: bad line %q", FileName, l)
		}
		if f[0] == "source" {
			r.Source = f[1]
		} else {
			r.Binaries[f[0]] = f[1]
		}
	}
	if r.Source == "" {
		return Record{}, fmt.Errorf("%s: no source line", FileName)
	}
	return r, nil
}
