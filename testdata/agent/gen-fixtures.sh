#!/bin/sh
# Regenerates the /proc and /sys fixture trees the agent/hw tests read.
# The trees are committed; this script documents how they were made and keeps
# them reproducible. sysfs is full of symlinks (block/X, class/net/X, device,
# device/driver), so the trees use real relative symlinks like the kernel's.
#
#   server2s/  2-socket Xeon server: nvme + 2 rotational SATA + USB stick, loop
#              and zram to skip, 4 NICs (ixgbe x2, igb, one unplugged), UEFI.
#   qemu-vm/   small QEMU VM: virtio vda, virtio_net 52:54:00:..., SeaBIOS.
#   broken/    one machine with malformed entries in every reader.
#   disks4/    /sys/block only: four disks for root-device hints (NVMe 480 GB
#              SAMSUNG, SATA SSD, SATA HDD, USB stick) with wwid, VPD serial,
#              vendor and the ata_port/nsid entries by-path names come from.
set -eu
cd "$(dirname "$0")"
rm -rf server2s qemu-vm broken disks4

w() { mkdir -p "$(dirname "$1")"; printf '%s\n' "$2" >"$1"; }

# ---------------------------------------------------------------- server2s
R=server2s
{
	# Linux numbers a 2 x 12-core HT Xeon: 0-11 socket 0, 12-23 socket 1,
	# then the hyperthread siblings 24-47 in the same order. Core ids on
	# Skylake-SP are sparse (0-5, 8-13), which is why cores are counted as
	# distinct (physical id, core id) pairs rather than max(core id)+1.
	p=0
	for pass in 0 1; do
		for sock in 0 1; do
			for c in 0 1 2 3 4 5 8 9 10 11 12 13; do
				cat <<EOF
processor	: $p
vendor_id	: GenuineIntel
cpu family	: 6
model		: 85
model name	: Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz
stepping	: 7
cpu MHz		: 2200.000
cache size	: 16896 KB
physical id	: $sock
siblings	: 24
core id		: $c
cpu cores	: 12
apicid		: $((sock * 64 + c * 2 + pass))
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc
bogomips	: 4400.00

EOF
				p=$((p + 1))
			done
		done
	done
} | { mkdir -p $R/proc; cat >$R/proc/cpuinfo; }
w $R/proc/meminfo "MemTotal:       196483536 kB
MemFree:        190012344 kB
MemAvailable:   191234560 kB
Buffers:           12345 kB"
w $R/proc/sys/kernel/hostname "rack12-u07"
w $R/proc/sys/kernel/osrelease "6.1.0-18-amd64"

pci=sys/devices/pci0000:00
blk() { # name devpath
	mkdir -p "$R/$2/$1/queue"
	ln -s "../${2#sys/}/$1" "$R/sys/block/$1"
}
mkdir -p $R/sys/block
# NVMe: model and serial live on the controller (device -> ../../nvme0).
blk nvme0n1 "$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0"
w $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1/size 1875385008
w $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1/removable 0
w $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1/queue/rotational 0
w $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/model "SAMSUNG MZQLB960HAJR-00007               "
w $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/serial "S437NA0M812345      "
w $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1/wwid "eui.34333730528123450025384500000001"
ln -s ../../nvme0 $R/$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1/device
# Two SATA spinning disks: no serial file, only wwid on the scsi device.
for d in sda:0 sdb:1; do
	n=${d%%:*}; t=${d##*:}
	base=$pci/0000:00:17.0/ata$((t + 1))/host$t/target$t:0:0/$t:0:0:0
	blk $n "$base/block"
	w $R/$base/block/$n/size 7814037168
	w $R/$base/block/$n/removable 0
	w $R/$base/block/$n/queue/rotational 1
	w $R/$base/model "ST4000NM0035-1V4"
	w $R/$base/wwid "naa.5000c500a1b2c3d$t"
	ln -s ../../../$t:0:0:0 $R/$base/block/$n/device
done
# USB stick: removable, not rotational.
base=$pci/0000:00:14.0/usb1/1-4/1-4:1.0/host6/target6:0:0/6:0:0:0
blk sdc "$base/block"
w $R/$base/block/sdc/size 60062500
w $R/$base/block/sdc/removable 1
w $R/$base/block/sdc/queue/rotational 0
w $R/$base/model "Cruzer Blade    "
ln -s ../../../6:0:0:0 $R/$base/block/sdc/device
# Devices that are not install targets.
for v in loop0 loop1 zram0 ram0 dm-0 sr0; do
	mkdir -p $R/sys/devices/virtual/block/$v/queue
	w $R/sys/devices/virtual/block/$v/size 2097152
	ln -s ../devices/virtual/block/$v $R/sys/block/$v
done

mkdir -p $R/sys/class/net $R/sys/bus/pci/drivers/ixgbe $R/sys/bus/pci/drivers/igb
nic() { # name pcidev driver mac speed carrier operstate
	dev=$pci/$2
	mkdir -p $R/$dev/net/$1
	ln -s ../../../bus/pci/drivers/$3 $R/$dev/driver
	ln -s ../../../$2 $R/$dev/net/$1/device
	ln -s ../../devices/pci0000:00/$2/net/$1 $R/sys/class/net/$1
	w $R/$dev/net/$1/address "$4"
	w $R/$dev/net/$1/speed "$5"
	w $R/$dev/net/$1/carrier "$6"
	w $R/$dev/net/$1/operstate "$7"
}
# The relative links above assume the pci device sits one level below
# pci0000:00, which holds for these on-board ports.
nic eno1 0000:18.0 ixgbe "ac:1f:6b:4a:10:01" 10000 1 up
nic eno2 0000:18.1 ixgbe "ac:1f:6b:4a:10:02" 10000 1 up
nic eno3 0000:19.0 igb "ac:1f:6b:4a:10:03" 1000 1 up
nic eno4 0000:19.1 igb "ac:1f:6b:4a:10:04" -1 0 down
# Virtual interfaces: no device link, skipped.
for v in lo br0 docker0; do
	mkdir -p $R/sys/devices/virtual/net/$v
	w $R/sys/devices/virtual/net/$v/address "02:42:ac:11:00:02"
	w $R/sys/devices/virtual/net/$v/operstate up
	ln -s ../../devices/virtual/net/$v $R/sys/class/net/$v
done
w $R/sys/devices/virtual/net/lo/address "00:00:00:00:00:00"

dmi=$R/sys/devices/virtual/dmi/id
w $dmi/sys_vendor "Supermicro"
w $dmi/product_name "SYS-6029P-TR"
w $dmi/product_serial "S329384X9123456"
w $dmi/product_uuid "00000000-0000-0000-0000-ac1f6b4a1001"
w $dmi/bios_vendor "American Megatrends Inc."
w $dmi/bios_version "3.4"
w $dmi/bios_date "10/15/2020"
mkdir -p $R/sys/class/dmi
ln -s ../../devices/virtual/dmi/id $R/sys/class/dmi/id
mkdir -p $R/sys/firmware/efi/efivars

# ---------------------------------------------------------------- qemu-vm
R=qemu-vm
mkdir -p $R/proc
cat >$R/proc/cpuinfo <<'EOF'
processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 15
model		: 107
model name	: QEMU Virtual CPU version 2.5+
stepping	: 1
cpu MHz		: 2445.426
cache size	: 512 KB
physical id	: 0
siblings	: 1
core id		: 0
cpu cores	: 1
apicid		: 0
fpu		: yes
flags		: fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx lm nopl cpuid pni cx16 hypervisor lahf_lm
bogomips	: 4890.85

EOF
w $R/proc/meminfo "MemTotal:         492364 kB
MemFree:          401220 kB"
w $R/proc/sys/kernel/hostname "(none)"
w $R/proc/sys/kernel/osrelease "6.1.0-18-cloud-amd64"
pci=sys/devices/pci0000:00
mkdir -p $R/sys/block $R/sys/bus/virtio/drivers/virtio_blk $R/sys/bus/virtio/drivers/virtio_net
mkdir -p $R/$pci/0000:00:05.0/virtio1/block/vda/queue
ln -s ../devices/pci0000:00/0000:00:05.0/virtio1/block/vda $R/sys/block/vda
w $R/$pci/0000:00:05.0/virtio1/block/vda/size 4194304
w $R/$pci/0000:00:05.0/virtio1/block/vda/removable 0
w $R/$pci/0000:00:05.0/virtio1/block/vda/queue/rotational 1
w $R/$pci/0000:00:05.0/virtio1/block/vda/serial "lpmos-disk-0"
ln -s ../../../virtio1 $R/$pci/0000:00:05.0/virtio1/block/vda/device
ln -s ../../../../bus/virtio/drivers/virtio_blk $R/$pci/0000:00:05.0/virtio1/driver
mkdir -p $R/$pci/0000:00:03.0/virtio0/net/ens3 $R/sys/class/net
ln -s ../../../../bus/virtio/drivers/virtio_net $R/$pci/0000:00:03.0/virtio0/driver
ln -s ../../../virtio0 $R/$pci/0000:00:03.0/virtio0/net/ens3/device
ln -s ../../devices/pci0000:00/0000:00:03.0/virtio0/net/ens3 $R/sys/class/net/ens3
w $R/$pci/0000:00:03.0/virtio0/net/ens3/address "52:54:00:aa:00:01"
w $R/$pci/0000:00:03.0/virtio0/net/ens3/speed -1
w $R/$pci/0000:00:03.0/virtio0/net/ens3/carrier 1
w $R/$pci/0000:00:03.0/virtio0/net/ens3/operstate up
mkdir -p $R/sys/devices/virtual/net/lo
w $R/sys/devices/virtual/net/lo/address "00:00:00:00:00:00"
ln -s ../../devices/virtual/net/lo $R/sys/class/net/lo
dmi=$R/sys/class/dmi/id
w $dmi/sys_vendor "QEMU"
w $dmi/product_name "Standard PC (i440FX + PIIX, 1996)"
w $dmi/bios_vendor "SeaBIOS"
w $dmi/bios_version "1.16.2-debian-1.16.2-1"
w $dmi/bios_date "04/01/2014"
w $dmi/product_uuid "6a1b1e59-7bd3-4c4d-9b0e-2f3a4f5b6c7d"
# no product_serial: QEMU leaves it empty unless -smbios type=1,serial= is set

# ---------------------------------------------------------------- broken
# Every reader meets one malformed entry; each must leave only that field
# empty and report the rest.
R=broken
mkdir -p $R/proc
cat >$R/proc/cpuinfo <<'EOF'
processor	: 0
model name	: Intel(R) Celeron(R) CPU J1900 @ 1.99GHz
physical id	: zero
core id		: 0
cpu cores	: four

processor	: 1
model name	: Intel(R) Celeron(R) CPU J1900 @ 1.99GHz
physical id	: zero
core id		: 1
cpu cores	: four

EOF
w $R/proc/meminfo "MemTotal:       lots kB"
mkdir -p $R/sys/block/sda/queue $R/sys/block/sdb/queue
w $R/sys/block/sda/size "not-a-number"
w $R/sys/block/sda/removable 0
w $R/sys/block/sda/queue/rotational 0
w $R/sys/block/sdb/size 500118192
w $R/sys/block/sdb/removable "maybe"
w $R/sys/block/sdb/queue/rotational 1
mkdir -p $R/sys/class/net/enp1s0/device $R/sys/class/net/enp2s0/device
w $R/sys/class/net/enp1s0/address "00:e0:4c:68:00:01"
w $R/sys/class/net/enp1s0/speed "fast"
w $R/sys/class/net/enp1s0/operstate up
w $R/sys/class/net/enp2s0/address "not-a-mac"
w $R/sys/class/net/enp2s0/speed 1000
w $R/sys/class/net/enp2s0/carrier 1
# DMI directory exists but product_name is a directory, not a file.
w $R/sys/class/dmi/id/sys_vendor "Shenzhen Mini PC"
mkdir -p $R/sys/class/dmi/id/product_name

# ---------------------------------------------------------------- disks4
R=disks4
pci=sys/devices/pci0000:00
mkdir -p $R/sys/block
vpd80() { # file serial: SCSI VPD page 0x80, 4-byte header then ASCII
	mkdir -p "$(dirname "$1")"
	# shellcheck disable=SC2059
	{ printf '\000\200\000'; printf "\\$(printf %03o ${#2})"; printf '%s' "$2"; } >"$1"
}
# NVMe 480 GB: serial on the controller, wwid and nsid on the namespace.
n=$pci/0000:00:1d.0/0000:3b:00.0/nvme/nvme0
mkdir -p $R/$n/nvme0n1/queue
ln -s ../${n#sys/}/nvme0n1 $R/sys/block/nvme0n1
w $R/$n/nvme0n1/size 937703088
w $R/$n/nvme0n1/removable 0
w $R/$n/nvme0n1/queue/rotational 0
w $R/$n/nvme0n1/wwid "eui.0025388b91c0ffee"
w $R/$n/nvme0n1/nsid 1
w $R/$n/model "SAMSUNG MZQLB480HAJQ-00007               "
w $R/$n/serial "S4EMNX0R123456      "
ln -s ../../nvme0 $R/$n/nvme0n1/device
# SATA SSD on port 1, SATA HDD on port 2 of one AHCI controller.
sata() { # name port model sectors rotational wwid serial
	t=$(($2 - 1))
	a=$pci/0000:00:17.0/ata$2
	base=$a/host$t/target$t:0:0/$t:0:0:0
	mkdir -p $R/$base/block/$1/queue
	ln -s ../${base#sys/}/block/$1 $R/sys/block/$1
	w $R/$a/ata_port/ata$2/port_no $2
	w $R/$base/block/$1/size $4
	w $R/$base/block/$1/removable 0
	w $R/$base/block/$1/queue/rotational $5
	w $R/$base/model "$3"
	w $R/$base/vendor "ATA     "
	w $R/$base/wwid "$6"
	vpd80 $R/$base/vpd_pg80 "$7"
	ln -s ../../../$t:0:0:0 $R/$base/block/$1/device
}
sata sda 1 "INTEL SSDSC2KB240G8" 468862128 0 "naa.55cd2e415a1b2c3d" "PHYF912345AB240AGN"
sata sdb 2 "ST4000NM0035-1V4" 7814037168 1 "naa.5000c500a1b2c3d4" "ZC1A2B3C"
# USB stick: removable, serial in VPD, no wwid.
base=$pci/0000:00:14.0/usb1/1-4/1-4:1.0/host6/target6:0:0/6:0:0:0
mkdir -p $R/$base/block/sdc/queue
ln -s ../${base#sys/}/block/sdc $R/sys/block/sdc
w $R/$base/block/sdc/size 60062500
w $R/$base/block/sdc/removable 1
w $R/$base/block/sdc/queue/rotational 0
w $R/$base/model "Cruzer Blade    "
w $R/$base/vendor "SanDisk "
vpd80 $R/$base/vpd_pg80 "4C530001234567891234"
ln -s ../../../6:0:0:0 $R/$base/block/sdc/device
