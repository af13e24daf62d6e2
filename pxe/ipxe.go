package pxe

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// The iPXE binaries, their license and the Debian package version they come
// from. Written by gen-ipxe.sh; read-only.
//
//go:embed ipxe/*.kpxe ipxe/*.efi ipxe/COPYING.ipxe ipxe/VERSION
var ipxeFiles embed.FS

// Boot file names of the embedded iPXE builds.
const (
	FileBIOS      = "undionly.kpxe" // BIOS PXE: chainloads iPXE over the firmware's UNDI driver
	FileUEFI      = "ipxe.efi"      // UEFI x86-64, iPXE's own NIC drivers
	FileUEFISNP   = "snponly.efi"   // UEFI x86-64, the firmware's SNP driver only
	FileUEFIARM64 = "snp-arm64.efi" // UEFI arm64 (only when the package ships it)
	licenseFile   = "COPYING.ipxe"
	versionFile   = "VERSION"
	ipxeEmbedDir  = "ipxe"
)

// IPXEFiles returns the embedded iPXE tree: the boot binaries plus
// COPYING.ipxe (license) and VERSION (Debian package version and sha256s).
func IPXEFiles() fs.FS {
	sub, err := fs.Sub(ipxeFiles, ipxeEmbedDir)
	if err != nil {
		// fs.Sub only fails for an invalid literal path.
		panic(fmt.Sprintf("pxe: embedded iPXE tree: %v", err))
	}
	return sub
}

// IPXEBinaries lists the names of the embedded boot binaries, sorted.
func IPXEBinaries() []string {
	return bootBinaries(IPXEFiles())
}

// bootBinaries lists the top-level boot binaries (.kpxe, .efi) of fsys.
func bootBinaries(fsys fs.FS) []string {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && isBootBinary(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func isBootBinary(name string) bool {
	if strings.Contains(name, "/") {
		return false
	}
	switch path.Ext(name) {
	case ".kpxe", ".pxe", ".efi":
		return true
	}
	return false
}

// hasFile reports whether name is a regular top-level file of fsys.
func hasFile(fsys fs.FS, name string) bool {
	if name == "" || strings.Contains(name, "/") || !fs.ValidPath(name) {
		return false
	}
	st, err := fs.Stat(fsys, name)
	return err == nil && st.Mode().IsRegular()
}
