#!/usr/bin/env bash
# e2e/osimage.sh: build the small bootable test OS that e2e/pxe.sh installs.
#
#   bash e2e/osimage.sh KERNEL_DIR KREL BUSYBOX_DEB OUT.raw
#
# KERNEL_DIR is a Debian cloud kernel package unpacked with dpkg-deb -x
# (boot/vmlinuz-KREL, lib/modules/KREL). Nothing is mounted (this host has
# no vfat and no partition support for loop devices): the GPT is written
# with sfdisk on a file, the root with mkfs.ext4 -d, the ESP with mkfs.vfat
# + mtools, and grub's BIOS boot code is patched in by hand.
#
# Layout, like Debian's genericcloud image (64 MiB):
#   p14  1 MiB  BIOS boot partition: grub i386-pc core.img
#   p15  8 MiB  ESP (vfat): \EFI\lpmos\grubx64.efi only, no removable
#               \EFI\BOOT\BOOTX64.EFI: the lpmos agent must make it bootable
#   p1   rest   root (ext4, label lpmos-root, x86-64 root type GUID):
#               /boot/vmlinuz, /boot/initrd.img, /boot/grub/grub.cfg
# Both grubs find the root by its label and read /boot/grub/grub.cfg.
#
# The OS: the kernel boots a busybox initrd whose /init loads virtio_blk,
# mounts the root read-only, reads the cloud-init NoCloud seed the agent
# wrote (/var/lib/cloud/seed/nocloud), prints
#   LPMOS-OS-UP hostname=<local-hostname> key=<first public key> userdata=<marker line>
#   LPMOS-OS-BOOT firmware=uefi BootCurrent=<hex> desc=<its Boot#### description> BootOrder=<list>
# (or firmware=bios) on the serial console and powers off. A full
# cloud-init Debian (debootstrap) takes ~6 min to build and ~1 min to boot
# under TCG; this one builds in seconds and boots in ~10 s.
set -euo pipefail
[ $# = 4 ] || { echo "usage: $0 KERNEL_DIR KREL BUSYBOX_DEB OUT.raw" >&2; exit 2; }
K=$1 KREL=$2 BBDEB=$3 OUT=$4
MODS=$K/lib/modules/$KREL
[ -f "$K/boot/vmlinuz-$KREL" ] || { echo "osimage: no $K/boot/vmlinuz-$KREL" >&2; exit 1; }
for tool in sfdisk mkfs.ext4 mkfs.vfat mcopy mmd grub-mkimage cpio gzip dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "osimage: $tool missing (apt-get install fdisk e2fsprogs dosfstools mtools grub-common grub-pc-bin grub-efi-amd64-bin cpio)" >&2; exit 1; }
done
GRUBPC=/usr/lib/grub/i386-pc GRUBEFI=/usr/lib/grub/x86_64-efi
[ -f "$GRUBPC/boot.img" ] || { echo "osimage: no $GRUBPC/boot.img (apt-get install grub-pc-bin)" >&2; exit 1; }
[ -d "$GRUBEFI" ] || { echo "osimage: no $GRUBEFI (apt-get install grub-efi-amd64-bin)" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/lpmos-osimage.XXXXXX")
trap 'rm -rf "$T"' EXIT

# --- initrd: busybox + virtio_blk/efivarfs modules + /init --------------
I=$T/initrd
mkdir -p "$I/bin" "$I/proc" "$I/sys" "$I/dev" "$I/root" "$I/lib/modules"
dpkg-deb -x "$BBDEB" "$T/bb"
cp "$T/bb/bin/busybox" "$I/bin/busybox"

# resolve MODULE...: module paths (relative to $MODS) in load order,
# dependencies first, from each module's .modinfo depends= (a kernel
# unpacked with dpkg-deb -x has no modules.dep). Built-in modules are skipped.
declare -A SEEN
ORDER=()
resolve() {
  local m f deps d
  for m in "$@"; do
    m=${m//-/_}
    [ -z "${SEEN[$m]:-}" ] || continue
    SEEN[$m]=1
    f=$(cd "$MODS" && find kernel -name "$m.ko" -o -name "${m//_/-}.ko" | head -1)
    if [ -z "$f" ]; then
      grep -q "/${m}.ko\$\|/${m//_/-}.ko\$" "$MODS/modules.builtin" 2>/dev/null && continue
      echo "osimage: module $m neither a module nor built in" >&2; exit 1
    fi
    deps=$(tr '\0' '\n' <"$MODS/$f" | sed -n 's/^depends=//p' | head -1 | tr ',' ' ')
    for d in $deps; do resolve "$d"; done
    ORDER+=("$f")
  done
}
resolve virtio_pci virtio_blk efivarfs
: >"$I/lib/modules/order"
for f in "${ORDER[@]}"; do
  cp "$MODS/$f" "$I/lib/modules/"
  basename "$f" >>"$I/lib/modules/order"
done

cat >"$I/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo 1 >/proc/sys/kernel/printk   # keep kernel messages out of our lines
say() { echo "$*"; }
bye() { say "LPMOS-OS-FAIL $*"; sync; poweroff -f; sleep 60; }
while read -r m; do
  [ "$m" != efivarfs.ko ] || [ -d /sys/firmware/efi ] || continue
  insmod "/lib/modules/$m" || say "lpmos-os: insmod $m failed"
done </lib/modules/order
if [ -d /sys/firmware/efi ]; then
  ev=/sys/firmware/efi/efivars G=8be4df61-93ca-11d2-aa0d-00e098032b8c
  [ -f $ev/BootCurrent-$G ] || mount -t efivarfs efivarfs $ev || say "lpmos-os: cannot mount efivarfs"
  # u16le FILE SKIP [COUNT]: little-endian 16-bit values as %04X. The
  # whole file goes through od (seeking in efivarfs files is not reliable).
  u16le() { od -An -v -tx1 "$1" | awk -v skip="$2" -v cnt="${3:-999999}" '{for (i = 1; i <= NF; i++) if (n < skip + cnt) b[n++] = $i} END {for (i = skip; i + 1 < n; i += 2) printf "%s%s%s", (i > skip ? "," : ""), toupper(b[i+1]), toupper(b[i])}'; }
  cur=$(u16le $ev/BootCurrent-$G 4 2)
  order=$(u16le $ev/BootOrder-$G 4)
  # EFI_LOAD_OPTION after the 4 attribute bytes: Attributes(4),
  # FilePathListLength(2), Description (UCS-2, NUL-terminated)
  desc=$(od -An -v -tx1 $ev/Boot$cur-$G | awk '
    function hex(s,  i, v) { v = 0; for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v }
    {for (i = 1; i <= NF; i++) b[n++] = $i}
    END {for (i = 10; i + 1 < n; i += 2) { c = hex(b[i]) + 256 * hex(b[i+1]); if (c == 0) break; printf "%c", (c < 128 ? c : 63) }}')
  say "LPMOS-OS-BOOT firmware=uefi BootCurrent=$cur BootOrder=$order desc=$desc"
else
  say "LPMOS-OS-BOOT firmware=bios"
fi
dev=
for i in $(seq 100); do dev=$(findfs LABEL=lpmos-root 2>/dev/null) && break; dev=; sleep 0.1; done
[ -n "$dev" ] || bye "no file system labelled lpmos-root"
mount -t ext4 -o ro "$dev" /root || bye "cannot mount $dev"
seed=/root/var/lib/cloud/seed/nocloud
[ -f $seed/meta-data ] || bye "no NoCloud seed in $seed"
host=$(sed -n 's/^local-hostname: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' $seed/meta-data)
key=$(awk '/^public-keys:/{k=1; next} k && /^ *- /{sub(/^ *- *"?/, ""); sub(/" *$/, ""); print; exit} /^[^ ]/{k=0}' $seed/meta-data)
ud=$(grep -m1 'lpmos-e2e-marker' $seed/user-data 2>/dev/null)
say "LPMOS-OS-UP hostname=$host key=$key userdata=$ud root=$dev"
umount /root
sync
poweroff -f
sleep 60
EOF
chmod 755 "$I/init"
(cd "$I" && find . | sort | cpio -o -H newc --quiet) | gzip -9 >"$T/initrd.img"

# --- root file system -----------------------------------------------------
R=$T/root
mkdir -p "$R/boot/grub" "$R/etc" "$R/root" "$R/var/lib/cloud"
cp "$K/boot/vmlinuz-$KREL" "$R/boot/vmlinuz"
cp "$T/initrd.img" "$R/boot/initrd.img"
echo "lpmos-e2e-image" >"$R/etc/hostname"
printf 'PRETTY_NAME="lpmos e2e test OS"\nID=debian\nVERSION_ID=12\n' >"$R/etc/os-release"
echo "lpmos e2e test OS, kernel $KREL" >"$R/root/e2e-marker"
cat >"$R/boot/grub/grub.cfg" <<'EOF'
set timeout=0
set default=0
if [ "$grub_platform" = pc ]; then
  serial --unit=0 --speed=115200
  terminal_output serial
fi
menuentry "lpmos e2e test OS" {
  echo "lpmos-os grub ($grub_platform): loading the kernel"
  linux /boot/vmlinuz root=LABEL=lpmos-root ro console=ttyS0,115200 panic=-1 no_timer_check
  initrd /boot/initrd.img
}
EOF

# --- grub images ------------------------------------------------------------
cat >"$T/embed.cfg" <<'EOF'
search --no-floppy --label lpmos-root --set=root
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
EOF
COMMON=(part_gpt ext2 normal linux search search_label configfile echo test)
grub-mkimage -O i386-pc -o "$T/core.img" -c "$T/embed.cfg" -p /boot/grub "${COMMON[@]}" biosdisk serial terminal
grub-mkimage -O x86_64-efi -o "$T/grubx64.efi" -c "$T/embed.cfg" -p /boot/grub "${COMMON[@]}" fat efi_gop

# --- partition table --------------------------------------------------------
SS=512
BIOS_START=2048 BIOS_SIZE=2048
ESP_START=4096 ESP_SIZE=16384
ROOT_START=20480
TOTAL=$((64 << 20))
ROOT_SIZE=$((TOTAL / SS - ROOT_START - 34))
rm -f "$OUT"; truncate -s "$TOTAL" "$OUT"
b=$(basename "$OUT")
sfdisk -q "$OUT" >/dev/null <<EOF
label: gpt
${b}1 : start=$ROOT_START, size=$ROOT_SIZE, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
${b}14 : start=$BIOS_START, size=$BIOS_SIZE, type=21686148-6449-6E6F-744E-656564454649, name="bios"
${b}15 : start=$ESP_START, size=$ESP_SIZE, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
EOF

# root
truncate -s $((ROOT_SIZE * SS)) "$T/root.ext4"
mkfs.ext4 -q -F -L lpmos-root -d "$R" "$T/root.ext4" >/dev/null
dd if="$T/root.ext4" of="$OUT" bs=$SS seek=$ROOT_START conv=notrunc status=none

# ESP
truncate -s $((ESP_SIZE * SS)) "$T/esp.vfat"
mkfs.vfat -n ESP "$T/esp.vfat" >/dev/null
mmd -i "$T/esp.vfat" ::/EFI ::/EFI/lpmos
mcopy -i "$T/esp.vfat" "$T/grubx64.efi" ::/EFI/lpmos/grubx64.efi
dd if="$T/esp.vfat" of="$OUT" bs=$SS seek=$ESP_START conv=notrunc status=none

# BIOS: core.img into the BIOS boot partition, boot.img into the MBR,
# patched the way grub-bios-setup does (it cannot run on an image file here:
# it guesses its own root device from the host):
#  - boot.img's first 440 bytes (the partition table and signature stay),
#    kernel_sector (offset 0x5c, u64) = LBA of core.img, and the buggy-BIOS
#    drive check jump at 0x66 replaced by two NOPs (as for a hard disk);
#  - core.img's first sector (diskboot) ends with a blocklist
#    {u64 start, u16 len, u16 segment} at 0x1f4: grub-mkimage fills len and
#    segment; start = LBA of core.img + 1.
CORE_SECTORS=$(( ($(stat -c %s "$T/core.img") + SS - 1) / SS ))
[ "$CORE_SECTORS" -le "$BIOS_SIZE" ] || { echo "osimage: core.img ($CORE_SECTORS sectors) does not fit the BIOS boot partition" >&2; exit 1; }
le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (v >> (8 * i)) & 255 )))"; done; }
cp "$T/core.img" "$T/core.patched"
le64 $((BIOS_START + 1)) | dd of="$T/core.patched" bs=1 seek=$((0x1f4)) conv=notrunc status=none
dd if="$T/core.patched" of="$OUT" bs=$SS seek=$BIOS_START conv=notrunc status=none
dd if="$GRUBPC/boot.img" of="$OUT" bs=440 count=1 conv=notrunc status=none
le64 $BIOS_START | dd of="$OUT" bs=1 seek=$((0x5c)) conv=notrunc status=none
printf '\x90\x90' | dd of="$OUT" bs=1 seek=$((0x66)) conv=notrunc status=none

echo "osimage: $OUT: $((TOTAL >> 20)) MiB, kernel $KREL, modules: ${ORDER[*]##*/}"
