// Package pxe is the network boot side of an lpmos region: a proxyDHCP (or
// full DHCP) server that points PXE firmware at iPXE, a read-only TFTP server
// for the embedded iPXE binaries, and the HTTP handler that serves the per-MAC
// iPXE script plus the agent's kernel and initramfs.
//
// Every service is a small facade: build it from its Config with New..., then
// Start(ctx) runs it until ctx is done. The package keeps no globals and does
// not import the store: it asks small interfaces (Machines, Leases, Decider)
// that the caller implements.
//
// The iPXE binaries under ipxe/ come from Debian's ipxe package; regenerate
// them with `go generate ./pxe` (see gen-ipxe.sh).
package pxe

//go:generate sh ./gen-ipxe.sh
