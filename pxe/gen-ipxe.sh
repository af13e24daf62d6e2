#!/bin/sh
# gen-ipxe.sh copies the iPXE boot binaries from Debian's ipxe package into
# pxe/ipxe/, where package pxe embeds them. Run by `go generate ./pxe`.
# Needs: apt-get install -y --no-install-recommends ipxe
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=${IPXE_DIR:-/usr/lib/ipxe}
dst="$here/ipxe"

if [ ! -r "$src/undionly.kpxe" ]; then
	echo "gen-ipxe: $src/undionly.kpxe missing: apt-get install -y --no-install-recommends ipxe" >&2
	exit 1
fi
mkdir -p "$dst"

# BIOS (UNDI chainload), UEFI x86-64 full driver set, UEFI x86-64 SNP only.
# ipxe.efi is a symlink to /boot/ipxe.efi in Debian: cp -L follows it.
for f in undionly.kpxe ipxe.efi snponly.efi; do
	cp -L "$src/$f" "$dst/$f"
done
# arm64 UEFI build: newer Debian packages ship it, bookworm's does not.
for cand in "$src/arm64-efi/snponly.efi" "$src/arm64-efi/snp.efi" "$src/snp-arm64.efi"; do
	if [ -r "$cand" ]; then
		cp -L "$cand" "$dst/snp-arm64.efi"
		break
	fi
done
chmod 0644 "$dst"/*

cp /usr/share/doc/ipxe/copyright "$dst/COPYING.ipxe"
ver=$(dpkg-query -W -f='${Version}' ipxe 2>/dev/null || echo unknown)
{
	echo "Debian package ipxe $ver"
	echo "source: https://ipxe.org (git 36a4c85), Debian's build"
	(cd "$dst" && sha256sum -- *.kpxe *.efi)
} >"$dst/VERSION"
echo "gen-ipxe: copied iPXE $ver into $dst"
