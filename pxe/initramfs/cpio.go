package initramfs

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// File mode type bits of the cpio newc format (the same as st_mode).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

// cpioWriter writes a newc ("070701") archive, the format the kernel
// unpacks into its rootfs. Every entry has owner 0:0 and mtime 0, so the
// same input always gives the same bytes.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	n    int64
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, dirs: map[string]bool{}}
}

// header writes one entry header and its name, padded to 4 bytes.
func (c *cpioWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	if c.err != nil {
		return
	}
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	if name == "TRAILER!!!" {
		ino = 0
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(h))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// clean turns "/a/b/" into "a/b"; the archive holds relative names.
func clean(name string) (string, error) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" || name == "." {
		return "", fmt.Errorf("cpio: empty entry name")
	}
	return name, nil
}

// mkdirAll adds name and its missing parents as directories (0755).
func (c *cpioWriter) mkdirAll(name string) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if c.dirs[name] {
		return nil
	}
	if parent := path.Dir(name); parent != "." {
		if err := c.mkdirAll(parent); err != nil {
			return err
		}
	}
	c.dirs[name] = true
	c.header(name, modeDir|0o755, 0, 0, 0)
	return c.err
}

// file adds a regular file (with its parent directories).
func (c *cpioWriter) file(name string, perm uint32, data []byte) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if parent := path.Dir(name); parent != "." {
		if err := c.mkdirAll(parent); err != nil {
			return err
		}
	}
	c.header(name, modeFile|perm&0o7777, len(data), 0, 0)
	c.write(data)
	c.pad()
	return c.err
}

// charDev adds a character device node.
func (c *cpioWriter) charDev(name string, perm, major, minor uint32) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if parent := path.Dir(name); parent != "." {
		if err := c.mkdirAll(parent); err != nil {
			return err
		}
	}
	c.header(name, modeChar|perm&0o7777, 0, major, minor)
	return c.err
}

// close writes the trailer entry. It does not close the underlying writer.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
