// Package testenv is the test suite's policy for what a machine lacks: a
// test that needs a tool (chromium, qemu-img, mkfs.ext4, ...), root, or
// network namespaces skips with a one-line reason naming the apt package
// when it is missing, so `go test ./...` passes on a machine with Go only;
// with LPMOS_TEST_REQUIRE_ALL=1 (set by .ci/run) each such skip is a
// failure instead, so CI never skips silently.
//
// It imports the standard library only, so tests under agent/ may use it.
package testenv

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// RequireAllEnv turns every skip of this package into a failure when "1".
const RequireAllEnv = "LPMOS_TEST_REQUIRE_ALL"

// HideEnv is a comma list of tools (and "root") to treat as missing, to
// see the skips on a machine that has everything: LPMOS_TEST_HIDE=chromium,root.
const HideEnv = "LPMOS_TEST_HIDE"

// RequireAll reports whether missing requirements fail rather than skip.
func RequireAll() bool { return os.Getenv(RequireAllEnv) == "1" }

func hidden(name string) bool {
	return slices.Contains(strings.Split(os.Getenv(HideEnv), ","), name)
}

// Missing skips the test with the reason, or fails it under
// LPMOS_TEST_REQUIRE_ALL=1.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if RequireAll() {
		t.Fatalf("%s (%s=1: every test must run here)", reason, RequireAllEnv)
	}
	t.Skipf("skipped: %s (%s=1 makes this a failure)", reason, RequireAllEnv)
}

// RequireTool returns the path of the command name, or skips (fails under
// LPMOS_TEST_REQUIRE_ALL=1) naming the Debian package that provides it.
func RequireTool(t testing.TB, name, aptPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil || hidden(name) {
		Missing(t, fmt.Sprintf("needs %s (apt-get install -y --no-install-recommends %s)", name, aptPackage))
		return ""
	}
	return path
}

// RequireFile is RequireTool for a program at a fixed path (Debian's
// chromium is /usr/bin/chromium whatever PATH says).
func RequireFile(t testing.TB, path, aptPackage string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil || hidden(filepath.Base(path)) {
		Missing(t, fmt.Sprintf("needs %s (apt-get install -y --no-install-recommends %s)", path, aptPackage))
		return ""
	}
	return path
}

// RequireRoot skips (fails under LPMOS_TEST_REQUIRE_ALL=1) unless the test
// runs as root; why says what root is for (loop devices, namespaces...).
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 || hidden("root") {
		Missing(t, "needs root for "+why+" (CI runs as root)")
	}
}

// ParallelAtLeast raises -test.parallel to n unless it was given; call it
// from TestMain after flag.Parse. The default, GOMAXPROCS (2 on the CI
// box), suits tests that compute; tests that mostly wait (for etcd's
// fsyncs, a server's timer, a child process) finish sooner side by side.
func ParallelAtLeast(n int) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if f := flag.Lookup("test.parallel"); f != nil && !set {
		if cur, err := strconv.Atoi(f.Value.String()); err == nil && cur < n {
			_ = f.Value.Set(strconv.Itoa(n))
		}
	}
}
