#!/bin/sh
# qemu-lab.sh boots one qemu VM from lpmos's pxe services (pxe/bench/pxelab)
# inside a network namespace it creates (bridge 10.55.0.0/24, nothing leaves
# it), and stops once the iPXE script was served. Every script says "local",
# so the VM shows "lpmos: nothing to install" on its serial console.
#
#   sh pxe/bench/qemu-lab.sh proxy uefi   # OVMF PXE -> TFTP ipxe.efi -> iPXE -> script
#   sh pxe/bench/qemu-lab.sh full bios    # SeaBIOS + qemu's iPXE ROM -> script
#
# proxy mode runs dnsmasq (DHCP only, at 10.55.0.2 in a second namespace) for
# the addresses. Logs: $OUT (default /tmp/lpmos-lab/MODE-FW). Needs root,
# iproute2, qemu-system-x86, ovmf, ipxe-qemu, dnsmasq-base, go.
set -u
mode=$1 fw=$2
ns=lpmos-lab-$$
out=${OUT:-/tmp/lpmos-lab/$mode-$fw}
rm -rf $out; mkdir -p $out
cd "$(dirname "$0")/../.."
go build -o $out/pxelab ./pxe/bench/pxelab || exit 1
ip netns add $ns
ip -n $ns link set lo up
ip -n $ns link add br0 type bridge forward_delay 0
ip -n $ns addr add 10.55.0.1/24 dev br0
ip -n $ns link set br0 up
ip -n $ns tuntap add dev tap0 mode tap
ip -n $ns link set tap0 master br0 up
ip netns exec $ns $out/pxelab 10.55.0.1 $mode local >$out/server.log 2>&1 &
spid=$!
dpid=""
if [ $mode = proxy ]; then
  # addresses from dnsmasq (DHCP only, no PXE), like a site's existing DHCP server
  ip netns add $ns-dhcp
  ip -n $ns link add dh1 type veth peer name dh0 netns $ns-dhcp
  ip -n $ns link set dh1 master br0 up
  ip -n $ns-dhcp addr add 10.55.0.2/24 dev dh0
  ip -n $ns-dhcp link set dh0 up
  ip netns exec $ns-dhcp dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root --pid-file= \
    --interface=dh0 --bind-interfaces --dhcp-range=10.55.0.100,10.55.0.150,255.255.255.0,1h \
    --dhcp-leasefile=$out/leases >$out/dnsmasq.log 2>&1 &
  dpid=$!
fi
sleep 1
if [ $fw = uefi ]; then
  fwargs="-machine q35 -bios /usr/share/ovmf/OVMF.fd"
  nic="virtio-net-pci,netdev=n0,mac=52:54:00:aa:00:07,bootindex=1,romfile="
else
  fwargs="-machine pc"
  nic="virtio-net-pci,netdev=n0,mac=52:54:00:aa:00:08"
fi
start=$(date +%s)
timeout 150 ip netns exec $ns qemu-system-x86_64 -accel tcg $fwargs -m 512 -smp 1 -nographic -no-reboot -boot n \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device $nic </dev/null >$out/serial.log 2>&1 &
qpid=$!
i=0
while [ $i -lt 140 ]; do
  grep -q "boot script served" $out/server.log && sleep 3 && break
  sleep 1; i=$((i+1))
done
echo "elapsed $(( $(date +%s) - start ))s"
kill $qpid 2>/dev/null; wait $qpid 2>/dev/null
kill $spid; wait $spid
[ -n "$dpid" ] && kill $dpid && wait $dpid
ip netns del $ns
[ $mode = proxy ] && ip netns del $ns-dhcp
