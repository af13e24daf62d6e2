package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// dataDirLockName is the file a running `serve` holds an exclusive flock
// on, with its pid inside, for as long as it uses the data dir.
const dataDirLockName = "lpmos.lock"

// errDataDirInUse: another process holds the data dir's lock.
var errDataDirInUse = errors.New("data dir in use")

// lockDataDir takes the data dir for this process, without waiting: a
// second `serve` on the same directory would otherwise block forever inside
// etcd's bbolt flock, saying nothing and deaf to SIGTERM. The lock is
// released by release (and by the kernel when the process dies, so a
// crashed serve never leaves a stale lock behind).
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, dataDirLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data dir lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
					holder = fmt.Sprintf("another lpmos (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("%w: %s is used by %s, which holds %s: stop it first, or give this lpmos its own --data-dir",
				errDataDirInUse, dir, holder, path)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}
