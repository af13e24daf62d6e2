package install

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// efivarfs (Documentation/filesystems/efivarfs.rst): one file per
// variable, named <Name>-<vendor GUID>, holding 4 bytes of attributes
// (little endian) and the data. A write must carry attributes and data in
// one write(2). Existing files are immutable (chattr +i) so a stray rm
// cannot brick the firmware: the flag is cleared before a rewrite.

const (
	// EFIVarsDir is where the kernel exposes the variables.
	EFIVarsDir = "/sys/firmware/efi/efivars"
	// efiFirmwareDir exists only when the machine booted through UEFI.
	efiFirmwareDir  = "/sys/firmware/efi"
	efivarfsMagic   = 0xde5e81e4
	ioctlFSGetFlags = 0x80086601 // FS_IOC_GETFLAGS (long on 64-bit)
	ioctlFSSetFlags = 0x40086602 // FS_IOC_SETFLAGS
	fsImmutableFL   = 0x00000010
)

// efiVars reads and writes global boot variables in an efivarfs directory
// (a plain directory in tests).
type efiVars struct{ dir string }

func (v efiVars) file(name string) string {
	return filepath.Join(v.dir, name+"-"+efiGlobalGUID)
}

// get returns a variable's data without the attribute prefix.
func (v efiVars) get(name string) ([]byte, error) {
	b, err := os.ReadFile(v.file(name))
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("efivar %s: %d bytes, shorter than its attributes", name, len(b))
	}
	return b[4:], nil
}

// set writes a variable with NV|BS|RT attributes in one write.
func (v efiVars) set(name string, data []byte) error {
	p := v.file(name)
	if err := clearImmutable(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("efivar %s: %w", name, err)
	}
	buf := make([]byte, 4+len(data))
	binary.LittleEndian.PutUint32(buf, efiVarAttrNVBSRT)
	copy(buf[4:], data)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("efivar %s: %w", name, err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("efivar %s: writing: %w", name, err)
	}
	if !isEfivarfs(v.dir) {
		// a plain file keeps old bytes past the end; efivarfs replaces
		// the whole variable on write
		if err := f.Truncate(int64(len(buf))); err != nil {
			f.Close()
			return fmt.Errorf("efivar %s: %w", name, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("efivar %s: %w", name, err)
	}
	return nil
}

// del deletes a variable; a missing one is fine.
func (v efiVars) del(name string) error {
	p := v.file(name)
	if err := clearImmutable(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("efivar %s: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("efivar %s: %w", name, err)
	}
	return nil
}

// bootEntries lists the Boot#### variables present.
func (v efiVars) bootEntries() ([]uint16, error) {
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("efivars: %w", err)
	}
	var out []uint16
	suffix := "-" + efiGlobalGUID
	for _, e := range ents {
		n := e.Name()
		if len(n) != len("Boot0000")+len(suffix) || !strings.HasPrefix(n, "Boot") || !strings.HasSuffix(n, suffix) {
			continue
		}
		x, err := strconv.ParseUint(n[4:8], 16, 16)
		if err != nil {
			continue
		}
		out = append(out, uint16(x))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func bootName(n uint16) string { return fmt.Sprintf("Boot%04X", n) }

func decodeU16s(b []byte) []uint16 {
	out := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		out = append(out, binary.LittleEndian.Uint16(b[i:]))
	}
	return out
}

func encodeU16s(s []uint16) []byte {
	b := make([]byte, 2*len(s))
	for i, x := range s {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// clearImmutable drops FS_IMMUTABLE_FL from an existing file. File systems
// without the flags ioctl (tmpfs in tests) have nothing to clear.
func clearImmutable(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags int
	if err := ioctlPtr(f.Fd(), ioctlFSGetFlags, unsafe.Pointer(&flags)); err != nil {
		if errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL) {
			return nil
		}
		return fmt.Errorf("FS_IOC_GETFLAGS %s: %w", p, err)
	}
	if flags&fsImmutableFL == 0 {
		return nil
	}
	flags &^= fsImmutableFL
	if err := ioctlPtr(f.Fd(), ioctlFSSetFlags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("FS_IOC_SETFLAGS %s: %w", p, err)
	}
	return nil
}

func isEfivarfs(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && uint32(st.Type) == efivarfsMagic
}

// mountEfivarfs mounts efivarfs on dir unless it already is.
func mountEfivarfs(dir string) error {
	if isEfivarfs(dir) {
		return nil
	}
	if err := syscall.Mount("efivarfs", dir, "efivarfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting efivarfs on %s (module efivarfs loaded?): %w", dir, err)
	}
	return nil
}

// registerBootEntry writes a Boot#### for the loader on the ESP and puts it
// right after the current (network) boot option in BootOrder. Older lpmos
// entries for the same ESP (a reinstall) are removed; their number is
// reused. It returns the entry's number.
func registerBootEntry(v efiVars, desc string, p espPartition, loaderPath string) (uint16, []uint16, error) {
	existing, err := v.bootEntries()
	if err != nil {
		return 0, nil, err
	}
	isNet := map[uint16]bool{}
	removed := map[uint16]bool{}
	used := map[uint16]bool{}
	for _, n := range existing {
		used[n] = true
		b, err := v.get(bootName(n))
		if err != nil {
			continue
		}
		o, err := parseLoadOption(b)
		if err != nil {
			continue
		}
		isNet[n] = o.Network
		if strings.HasPrefix(o.Description, lpmosDescription) && o.HasHD && o.HDGUID == p.GUID {
			removed[n] = true
		}
	}
	num := -1
	for n := range removed { // reuse the lowest stale number
		if num < 0 || int(n) < num {
			num = int(n)
		}
	}
	for i := 0; num < 0 && i <= 0xffff; i++ {
		if !used[uint16(i)] {
			num = i
		}
	}
	if num < 0 {
		return 0, nil, errors.New("no free Boot#### number")
	}
	added := uint16(num)
	delete(removed, added)
	if err := v.set(bootName(added), encodeLoadOption(desc, p, loaderPath)); err != nil {
		return 0, nil, err
	}
	current := -1
	if b, err := v.get("BootCurrent"); err == nil && len(b) >= 2 {
		current = int(binary.LittleEndian.Uint16(b))
	}
	var order []uint16
	if b, err := v.get("BootOrder"); err == nil {
		order = decodeU16s(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, nil, err
	}
	newOrder := arrangeBootOrder(order, current, func(n uint16) bool { return isNet[n] }, added, removed)
	if err := v.set("BootOrder", encodeU16s(newOrder)); err != nil {
		return 0, nil, err
	}
	var stale []uint16
	for n := range removed {
		stale = append(stale, n)
	}
	sort.Slice(stale, func(i, j int) bool { return stale[i] < stale[j] })
	for _, n := range stale {
		if err := v.del(bootName(n)); err != nil {
			return 0, nil, err
		}
	}
	return added, newOrder, nil
}
