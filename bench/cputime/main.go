// Command cputime runs a command and reports its wall time and the user and
// system CPU of it and every process it started, orphans included: it is a
// child subreaper, so a grandchild whose parent exits first (chromium's
// renderers and GPU process when the browser is killed) is reaped here and
// its CPU counted, which /usr/bin/time misses.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cputime command [args...]")
		os.Exit(2)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "cputime: subreaper:", err)
		os.Exit(2)
	}
	start := time.Now()
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "cputime:", err)
		os.Exit(2)
	}
	code := 0
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			break // ECHILD: every descendant reaped
		}
		if pid == cmd.Process.Pid {
			code = ws.ExitStatus()
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	u := time.Duration(ru.Utime.Nano())
	s := time.Duration(ru.Stime.Nano())
	fmt.Fprintf(os.Stderr, "%.2f s wall %.2f user %.2f sys %.2f cpu\n", time.Since(start).Seconds(), u.Seconds(), s.Seconds(), (u + s).Seconds())
	os.Exit(code)
}
