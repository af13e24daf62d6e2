#!/usr/bin/env bash
# e2e/pxe.sh: boot virtual servers from lpmos like real hardware and check
# that the whole product works: qemu VMs with an empty virtio disk PXE-boot
# (BIOS, UEFI with the NIC's iPXE ROM, UEFI fetching iPXE over lpmos's TFTP),
# the agent reports their hardware, the task is approved through the REST
# API, a bootable test OS image (e2e/osimage.sh: grub for BIOS and UEFI,
# a busybox init that prints the NoCloud seed) lands on the disk with the
# seed and, under UEFI, a boot entry the agent registers in the VM's NVRAM;
# the next boot still PXE-boots first, lpmos answers "exit 1", the firmware
# moves on to the disk, and the installed OS prints the task's hostname, ssh
# key and user_data marker (and, under UEFI, the boot entry it came from).
# A VM without a task shows up as a discovered machine. In power-ipmi a
# real IPMI BMC (OpenIPMI's ipmi_sim) is the VM's power: for a task with a
# BMC, lpmos sets PXE and powers it on over IPMI-over-LAN, the VM installs,
# and lpmos sets disk and power-cycles it into the installed OS, each action
# a task event; ipmitool only cross-checks what lpmos did.
#
# Run as root on Debian 12 (it apt-installs what it needs and downloads a
# Debian cloud kernel with apt-get download):   bash e2e/pxe.sh
#
# Everything runs in network namespaces this script creates; no packet
# leaves them. Environment:
#   LPMOS_E2E_MODES   scenarios to run (default: all of them, see SCENARIOS)
#   LPMOS_E2E_DIR     work directory (default /tmp/lpmos-e2e, wiped first)
#   LPMOS_E2E_CACHE   cache of downloaded packages and the built test OS
#                     image, keyed by its inputs (default /var/cache/lpmos-e2e)
#   LPMOS_E2E_KEEP=1  keep the work directory after a successful run
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PATH="/usr/local/go/bin:$HOME/go/bin:/usr/sbin:/sbin:$PATH"
export DEBIAN_FRONTEND=noninteractive

# name firmware dhcp-mode mac task|discover
SCENARIOS=(
  "bios-full        bios      full  52:54:00:e2:00:01 task"
  "discover-full    bios      full  52:54:00:e2:00:02 discover"
  "uefi-proxy       uefi      proxy 52:54:00:e2:00:03 task"
  "uefi-tftp-proxy  uefi-tftp proxy 52:54:00:e2:00:04 task"
  "power-ipmi       bios      full  52:54:00:e2:00:05 power"
)
MODES=${LPMOS_E2E_MODES:-"bios-full discover-full uefi-proxy uefi-tftp-proxy power-ipmi"}
W=${LPMOS_E2E_DIR:-/tmp/lpmos-e2e}
CACHE=${LPMOS_E2E_CACHE:-/var/cache/lpmos-e2e}
NSP="lpe2e$$"          # namespace prefix
T0=$(date +%s.%N)
PIDFILE=$W/pids        # every background process, for the trap

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
log() { printf '[%6ss] %s\n' "$(secs "$T0" "$(now)")" "$*"; }
die() { log "FAIL: $*"; exit 1; }
# timing NAME START: one line per phase, grep-able as "TIMING".
timing() { log "TIMING $1 $(secs "$2" "$(now)")s"; }
track() { echo "$1" >>"$PIDFILE"; }

[ "$(id -u)" = 0 ] || { echo "e2e/pxe.sh: run as root (network namespaces, qemu taps, DHCP ports)" >&2; exit 1; }
for m in $MODES; do
  printf '%s\n' "${SCENARIOS[@]}" | awk '{print $1}' | grep -qx "$m" ||
    { echo "e2e/pxe.sh: unknown mode $m (have: $(printf '%s\n' "${SCENARIOS[@]}" | awk '{printf "%s ", $1}'))" >&2; exit 2; }
done

cleanup() {
  local rc=$?
  set +e
  if [ -f "$PIDFILE" ]; then
    # newest first: VMs and scenario shells before the servers they talk to
    tac "$PIDFILE" | while read -r pid; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    tac "$PIDFILE" | while read -r pid; do kill -9 "$pid" 2>/dev/null; done
  fi
  for ns in full proxy dhcp; do ip netns del "$NSP-$ns" 2>/dev/null; done
  if [ $rc -ne 0 ]; then
    log "e2e/pxe.sh FAILED (exit $rc); logs are in $W"
  elif [ "${LPMOS_E2E_KEEP:-}" != 1 ]; then
    rm -rf "$W"
  fi
  log "whole run: $(secs "$T0" "$(now)")s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$W"; mkdir -p "$W" "$CACHE"; : >"$PIDFILE"

# --- packages -----------------------------------------------------------
t=$(now)
need=(qemu-system-x86 ipxe-qemu ovmf iproute2 cpio e2fsprogs dnsmasq-base curl jq fdisk
  grub-pc-bin grub-efi-amd64-bin grub-common mtools dosfstools)
need+=(openipmi ipmitool) # power-ipmi: ipmi_sim is the VM's BMC; ipmitool cross-checks lpmos
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
timing packages "$t"

# --- kernel ---------------------------------------------------------------
t=$(now)
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$kpkg" ] || { apt-get update -qq; kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}'); }
[ -n "$kpkg" ] || die "cannot find the Debian cloud kernel package (apt-cache depends linux-image-cloud-amd64)"
deb=$(ls "$CACHE/${kpkg}_"*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
  (cd "$CACHE" && apt-get download "$kpkg" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
  deb=$(ls "$CACHE/${kpkg}_"*.deb 2>/dev/null | head -1 || true)
  [ -n "$deb" ] || die "apt-get download $kpkg failed"
fi
K=$W/kernel
dpkg-deb -x "$deb" "$K"
KREL=${kpkg#linux-image-}
VMLINUZ=$K/boot/vmlinuz-$KREL
[ -f "$VMLINUZ" ] || die "no $VMLINUZ in $deb"
log "kernel $KREL"
timing kernel "$t"

# --- lpmos and the initramfs ---------------------------------------------
t=$(now)
go build -o "$W/lpmos" . || die "go build failed"
LPMOS=$W/lpmos
timing build "$t"
t=$(now)
mkdir -p "$W/boot"
cp "$VMLINUZ" "$W/boot/vmlinuz"
"$LPMOS" initramfs build --kernel "$VMLINUZ" --modules-dir "$K/lib/modules" -o "$W/boot/initramfs.img" >"$W/initramfs.txt" 2>&1 ||
  { cat "$W/initramfs.txt"; die "lpmos initramfs build failed"; }
head -1 "$W/initramfs.txt"
timing initramfs "$t"

# --- test image: a small bootable OS (e2e/osimage.sh), cached -------------
t=$(now)
bbdeb=$(ls "$CACHE"/busybox-static_*.deb 2>/dev/null | head -1 || true)
if [ -z "$bbdeb" ]; then
  (cd "$CACHE" && apt-get download busybox-static 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
  bbdeb=$(ls "$CACHE"/busybox-static_*.deb 2>/dev/null | head -1 || true)
  [ -n "$bbdeb" ] || die "apt-get download busybox-static failed"
fi
imgkey=$( { sha256sum e2e/osimage.sh | cut -d' ' -f1; basename "$deb"; basename "$bbdeb";
  dpkg-query -W -f '${Package} ${Version}\n' grub-pc-bin grub-efi-amd64-bin grub-common; } | sha256sum | cut -c1-16)
CIMG=$CACHE/osimage-$imgkey.raw
if [ -s "$CIMG" ]; then
  log "test OS image from the cache: $CIMG"
else
  rm -f "$CACHE"/osimage-*.raw
  bash e2e/osimage.sh "$K" "$KREL" "$bbdeb" "$CIMG.tmp" || die "building the test OS image failed"
  mv "$CIMG.tmp" "$CIMG"
fi
IMG=$W/image.raw
cp "$CIMG" "$IMG"
# where the root (p1) and the ESP (p15) are, for the disk checks
ROOT_START=$(sfdisk -J "$IMG" | jq '.partitiontable.partitions[] | select(.node | endswith("1")) | .start')
ROOT_SECTORS=$(sfdisk -J "$IMG" | jq '.partitiontable.partitions[] | select(.node | endswith("1")) | .size')
ESP_START=$(sfdisk -J "$IMG" | jq '.partitiontable.partitions[] | select(.type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") | .start')
FIRST_LBA=$(sfdisk -J "$IMG" | jq '[.partitiontable.partitions[].start] | min')
dd if="$IMG" of="$W/root.ext4" bs=512 skip="$ROOT_START" count="$ROOT_SECTORS" status=none
IMG_MARKER=$(debugfs -R "cat /root/e2e-marker" "$W/root.ext4" 2>/dev/null); rm -f "$W/root.ext4"
[ -n "$IMG_MARKER" ] || die "the test OS image has no /root/e2e-marker"
gzip -1 -k "$IMG"
timing image "$t"

# --- network namespaces ------------------------------------------------------
# NS-full: lpmos alone, full DHCP. NS-proxy: lpmos in proxyDHCP mode beside
# dnsmasq (plain DHCP) in NS-dhcp, joined to the bridge by a veth.
needns() { for m in $MODES; do printf '%s\n' "${SCENARIOS[@]}" | awk -v m="$m" '$1==m{print $3}'; done | sort -u; }
NSES=$(needns)
mkns() {
  local ns=$NSP-$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add br0 type bridge forward_delay 0
  ip -n "$ns" addr add 10.55.0.1/24 dev br0
  ip -n "$ns" addr add fd55::1/64 dev br0 nodad
  ip -n "$ns" link set br0 up
  mkdir -p "$W/$1"
  # IPv6 router advertisements: without them iPXE waits ~13 s for SLAAC.
  ip netns exec "$ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root --pid-file= \
    --interface=br0 --bind-interfaces --enable-ra --dhcp-range=fd55::,ra-only,64 \
    --log-facility="$W/$1/ra.log" &
  track $!
}
t=$(now)
for n in $NSES; do mkns "$n"; done
if grep -qx proxy <<<"$NSES"; then
  ip netns add "$NSP-dhcp"
  ip -n "$NSP-dhcp" link set lo up
  ip -n "$NSP-proxy" link add dh1 type veth peer name dh0 netns "$NSP-dhcp"
  ip -n "$NSP-proxy" link set dh1 master br0 up
  ip -n "$NSP-dhcp" addr add 10.55.0.2/24 dev dh0
  ip -n "$NSP-dhcp" link set dh0 up
  mkdir -p "$W/dhcp"; chmod 755 "$W/dhcp"
  ip netns exec "$NSP-dhcp" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root --pid-file= \
    --interface=dh0 --bind-interfaces --dhcp-range=10.55.0.100,10.55.0.150,255.255.255.0,1h \
    --dhcp-leasefile="$W/dhcp/leases" --log-dhcp --log-facility="$W/dhcp/dnsmasq.log" &
  track $!
fi
timing network "$t"

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out after ${limit}s waiting for $what"; return 1; }
    sleep 1
  done
}

# --- lpmos serve, one per namespace ---------------------------------------
# full: the region builds its own initramfs from the kernel and its modules
# (--kernel-modules-dir); proxy: it serves the one built above.
t=$(now)
for n in $NSES; do
  # no_timer_check: under TCG on a busy 2-core host the kernel's IO-APIC
  # timer check can fail ("IO-APIC + timer doesn't work!" panic, seen once
  # in CI-like load); VMs commonly boot with it.
  args=(serve --role=all --data-dir "$W/$n/data" --advertise-ip 10.55.0.1 --dhcp-iface br0 --dhcp-mode "$n"
    --agent-kernel-args no_timer_check)
  if [ "$n" = full ]; then
    mkdir -p "$W/full/boot"; cp "$VMLINUZ" "$W/full/boot/vmlinuz"
    args+=(--boot-dir "$W/full/boot" --kernel-modules-dir "$K/lib/modules"
      --dhcp-range-start 10.55.0.100 --dhcp-range-end 10.55.0.150 --dhcp-router 10.55.0.1)
    # power-ipmi: the region's BMC retries (3) come 0.5+1+2 s apart instead
    # of 2+4+8 s, and it polls power states every 3 s instead of a minute
    args+=(--bmc-retry-backoff 500ms --bmc-poll-interval 3s)
  else
    args+=(--boot-dir "$W/boot")
  fi
  ip netns exec "$NSP-$n" "$LPMOS" "${args[@]}" >"$W/$n/lpmos.log" 2>&1 &
  track $!
done
api() { # api NS METHOD PATH [BODY]: the control plane's REST API (HTTPS, cluster CA)
  local ns=$1 method=$2 path=$3 body=${4:-}
  ip netns exec "$NSP-$ns" curl -sS --fail-with-body -m 10 --cacert "$W/$ns/data/pki/ca.crt" -X "$method" \
    -H "Authorization: Bearer $(cat "$W/$ns/data/admin.token")" -H "Content-Type: application/json" \
    ${body:+-d "$body"} "https://127.0.0.1:8080$path"
}
for n in $NSES; do
  # the control plane answers first; the region (agent API) once its
  # initramfs is built
  # the control plane is on HTTPS with a certificate from the cluster CA
  up() { [ -s "$W/$n/data/admin.token" ] && [ -s "$W/$n/data/pki/ca.crt" ] &&
    ip netns exec "$NSP-$n" curl -sf -m 2 --cacert "$W/$n/data/pki/ca.crt" -o /dev/null https://127.0.0.1:8080/api/v1/health &&
    [ "$(ip netns exec "$NSP-$n" curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/)" != 000 ]; }
  wait_for 60 "lpmos ($n) to answer on :8080 and :8081" up || { tail -n 30 "$W/$n/lpmos.log"; die "lpmos ($n) did not start"; }
  health=$(ip netns exec "$NSP-$n" curl -sS -m 5 --cacert "$W/$n/data/pki/ca.crt" https://127.0.0.1:8080/api/v1/health) || { tail -n 30 "$W/$n/lpmos.log"; die "lpmos ($n): no health answer"; }
  if jq -e '[.. | objects | select(has("state")) | select(.state=="failed")] | length > 0' <<<"$health" >/dev/null; then
    echo "$health" | jq .; tail -n 30 "$W/$n/lpmos.log"; die "lpmos ($n): a service failed"
  fi
  # image sources must lie under the images dir (<data-dir>/images by default)
  mkdir -p "$W/$n/data/images"; cp "$IMG.gz" "$W/$n/data/images/debian-12.raw.gz"
  ip netns exec "$NSP-$n" "$LPMOS" image add debian 12 "$W/$n/data/images/debian-12.raw.gz" --data-dir "$W/$n/data" >"$W/$n/image-add.txt" 2>&1 ||
    { cat "$W/$n/image-add.txt"; die "lpmos image add ($n) failed"; }
done
[ -s "$W/full/boot/initramfs.img" ] || ! grep -qx full <<<"$NSES" || die "the full-mode region did not build its initramfs"
timing serve "$t"

# --- VMs ---------------------------------------------------------------------
# vm NAME FW NS MAC TAP DISK SERIAL [-no-reboot]: start one qemu in the
# background (PID in $VMPID).
vm() {
  local name=$1 fw=$2 ns=$3 mac=$4 tap=$5 disk=$6 serial=$7; shift 7
  local fwargs nic
  case $fw in
    bios) fwargs=(-machine pc); nic="virtio-net-pci,netdev=n0,mac=$mac" ;;
    uefi) fwargs=(-machine q35); nic="virtio-net-pci,netdev=n0,mac=$mac,bootindex=1" ;;
    # OVMF's own PXE client fetches iPXE from lpmos's TFTP, like a real server's UEFI.
    uefi-tftp) fwargs=(-machine q35); nic="virtio-net-pci,netdev=n0,mac=$mac,bootindex=1,romfile=" ;;
  esac
  if [ "$fw" != bios ]; then
    # OVMF with its NVRAM in a per-VM copy of OVMF_VARS next to the disk:
    # the boot entry the agent registers survives into the next boot.
    local vars; vars=$(dirname "$disk")/vars.fd
    [ -f "$vars" ] || cp /usr/share/OVMF/OVMF_VARS.fd "$vars"
    fwargs+=(-drive "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd" -drive "if=pflash,format=raw,file=$vars")
  fi
  # Under UEFI the disk needs a bootindex too: OVMF rewrites BootOrder from
  # qemu's boot order at every boot and drops the Boot#### entries of
  # devices that have none (the entry the agent registered would vanish).
  # Real firmware keeps what the OS wrote. BIOS: SeaBIOS tries the disk
  # after the NIC by itself.
  local drv="file=$disk,if=none,id=d0,format=raw,cache=unsafe" blk="virtio-blk-pci,drive=d0"
  [ "$fw" = bios ] || blk+=",bootindex=2"
  # OVMF's IPv6 PXE and HTTP boot options: the segment has router
  # advertisements but no DHCPv6, and after iPXE's "exit 1" OVMF stalled in
  # them for minutes (the TFTP mode never reached the disk in 6 min). Real
  # servers have the same switch in their setup.
  [ "$fw" = bios ] || fwargs+=(-fw_cfg name=opt/org.tianocore/IPv6Support,string=no)
  ip netns exec "$NSP-$ns" timeout 420 qemu-system-x86_64 -accel tcg "${fwargs[@]}" -m 512 -smp 1 \
    -nographic -boot n "$@" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "$nic" \
    -drive "$drv" -device "$blk" </dev/null >"$serial" 2>&1 &
  VMPID=$!
  track $VMPID
}

mktap() { # mktap NS TAP
  ip -n "$NSP-$1" tuntap add dev "$2" mode tap
  ip -n "$NSP-$1" link set "$2" master br0 up
}

# scenario NAME FW MODE MAC KIND: one VM through the whole flow. Runs in
# the background; everything it prints goes to $W/NAME/run.log.
scenario() {
  local name=$1 fw=$2 ns=$3 mac=$4 kind=$5
  [ "$kind" != power ] || { power_scenario "$@"; return; }
  local d=$W/$name tap=t${mac//:/}; tap=${tap:0:15}
  local t_scenario; t_scenario=$(now)
  mkdir -p "$d"
  local serial=$d/serial.log disk=$d/disk.img
  fail() {
    echo "FAIL [$name]: $*"
    echo "--- last lines of the VM serial console ($serial)"; tail -n 40 "$serial" 2>/dev/null | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g'
    echo "--- last lines of lpmos ($W/$ns/lpmos.log)"; tail -n 25 "$W/$ns/lpmos.log"
    return 1
  }
  # a command that fails outside an explicit check still says where
  trap '[[ $BASH_COMMAND == return* ]] || echo "FAIL [$name]: line $LINENO: $BASH_COMMAND failed"' ERR
  mktap "$ns" "$tap"
  truncate -s 128M "$disk"
  local id=""
  if [ "$kind" = task ]; then
    local body
    UD_MARKER="# lpmos-e2e-marker $name-$$-$RANDOM"
    body=$(jq -nc --arg mac "$mac" --arg host "e2e-$name" --arg key "$SSH_KEY" --arg ud "#cloud-config"$'\n'"$UD_MARKER"$'\n' \
      '{region_id:"dc1", target_mac:$mac, os_type:"debian", os_version:"12", hostname:$host,
        ssh_authorized_keys:[$key], user_data:$ud}')
    id=$(api "$ns" POST /api/v1/tasks "$body" | jq -r .id) || { fail "create task"; return 1; }
    [ -n "$id" ] && [ "$id" != null ] || { fail "create task: no id"; return 1; }
    echo "task $id for $mac"
  fi

  local tq th ta; tq=$(now)
  vm "$name" "$fw" "$ns" "$mac" "$tap" "$disk" "$serial" -no-reboot
  local qpid=$VMPID
  if [ "$kind" = discover ]; then
    machine() { api "$ns" GET /api/v1/machines | jq --arg mac "$mac" '.[] | select(.mac == $mac)'; }
    has_hw() { machine 2>/dev/null | jqok '.hardware.nics | length > 0'; }
    wait_for 240 "the discovered machine's hardware in /api/v1/machines" has_hw || { fail "discovery"; return 1; }
    TIMING "$name" "qemu start -> hardware in API" "$tq"
    check_hw "$(machine | jq .hardware)" "$mac" || { fail "hardware report"; return 1; }
    # An operator creates a task for the discovered machine: its running
    # agent picks it up without a reboot (the discovery session hands it
    # over), with the hardware already known, and the machine leaves the
    # Discovered list.
    local td body; td=$(now)
    body=$(jq -nc --arg mac "$mac" '{region_id:"dc1", target_mac:$mac, os_type:"debian", os_version:"12", hostname:"e2e-picked-up"}')
    id=$(api "$ns" POST /api/v1/tasks "$body" | jq -r .id) || { fail "create task for the discovered machine"; return 1; }
    picked() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jqok '.status.status == "pending_approval" and (.hardware.nics | length > 0)'; }
    wait_for 90 "the discovered machine's agent to pick up task $id" picked || { fail "pick-up without reboot"; return 1; }
    TIMING "$name" "task created -> picked up by the running agent (pending_approval)" "$td"
    [ -z "$(machine 2>/dev/null)" ] || { fail "the machine is still listed as discovered after the pick-up"; return 1; }
    kill -0 "$qpid" 2>/dev/null || { fail "the VM is gone: the pick-up needed a reboot"; return 1; }
    grep -q "task handed over to this agent" "$serial" || { fail "the agent's console does not show the hand-over"; return 1; }
    kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true
    TIMING "$name" "whole scenario" "$t_scenario"
    echo "PASS [$name]"
    return 0
  fi

  has_hw() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jqok '.status.status == "pending_approval" and (.hardware.nics | length > 0)'; }
  wait_for 240 "status pending_approval with the hardware report" has_hw || { fail "hardware report"; return 1; }
  TIMING "$name" "qemu start -> hardware in API" "$tq"
  check_hw "$(api "$ns" GET "/api/v1/tasks/$id" | jq .hardware)" "$mac" || { fail "hardware report"; return 1; }

  ta=$(now)
  api "$ns" PUT "/api/v1/tasks/$id/approve" >/dev/null || { fail "approve"; return 1; }
  ended() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jqok '.status.status | IN("completed","failed","cancelled")'; }
  wait_for 300 "the task to end" ended || { fail "install"; return 1; }
  local detail; detail=$(api "$ns" GET "/api/v1/tasks/$id")
  [ "$(jq -r .status.status <<<"$detail")" = completed ] || { fail "task ended $(jq -c .status <<<"$detail")"; return 1; }
  TIMING "$name" "approve -> completed" "$ta"
  local statuses stages
  statuses=$(jq -r '[.events[] | select(.kind=="status") | .to] | join(" ")' <<<"$detail")
  stages=$(jq -r '[.events[] | select(.kind=="stage") | .stage] | unique | join(" ")' <<<"$detail")
  echo "statuses: $statuses"; echo "stages: $stages"
  [[ " $statuses " =~ \ approved\ installing\ (.*\ )?completed\  ]] || { fail "status history lacks approved -> installing -> completed: $statuses"; return 1; }
  for s in partitioning downloading installing configuring; do
    [[ " $stages " == *" $s "* ]] || { fail "stage $s never reported (got: $stages)"; return 1; }
  done
  [ "$(jq -r .progress.percentage <<<"$detail")" = 100 ] || { fail "final progress $(jq -c .progress <<<"$detail")"; return 1; }
  # The real boot path went through the bootstrap exchange: the agent
  # redeemed the iPXE script's boot token (lpmos_token) once for its session.
  jq -r '.events[].message' <<<"$detail" | grep -q "^agent session opened: boot token redeemed by " ||
    { fail "no boot token exchange in the task's events"; return 1; }
  grep -aq "agent session opened" "$serial" || { fail "the agent's console does not show the boot token exchange"; return 1; }

  # The agent reboots when done; with -no-reboot qemu exits.
  wait_for 60 "the VM to reboot after the install" bash -c "! kill -0 $qpid 2>/dev/null" || { fail "VM still running after completion"; return 1; }
  grep -q "install complete" "$serial" || { fail "no 'install complete' on the console"; return 1; }
  # The agent talked HTTPS to the region, pinning the cluster CA from its kernel line.
  grep -aq "lpmos_client=https://[^ ]* lpmos_ca=sha256:[0-9a-f]\{64\}" "$serial" ||
    { fail "the agent's kernel line lacks lpmos_client=https://... lpmos_ca=sha256:<hex>"; return 1; }
  echo "agent kernel line: $(grep -ao 'lpmos_client=https://[^ ]* lpmos_ca=sha256:[0-9a-f]*' "$serial" | head -1)"

  # the agent's log on the console: the boot entry it registered (UEFI) or
  # why it registered none (BIOS)
  local boot_msg; boot_msg=$(grep -a 'msg="UEFI boot entry' "$serial" | tail -1 | tr -d '\r')
  echo "agent: $boot_msg"
  if [ "$fw" = bios ]; then
    [[ $boot_msg == *"booted through BIOS"* ]] || { fail "the agent did not log skipping the UEFI boot entry under BIOS"; return 1; }
  else
    [[ $boot_msg == *'msg="UEFI boot entry registered"'* ]] || { fail "the agent registered no UEFI boot entry"; return 1; }
  fi

  # The next boot: PXE first, lpmos answers "exit 1", the firmware moves on
  # to the disk, and the installed OS comes up with the task's settings.
  local script; script=$(ip netns exec "$NSP-$ns" curl -sS -m 5 "http://127.0.0.1:8081/boot/$mac.ipxe")
  grep -qx "exit 1" <<<"$script" || { fail "iPXE script after completion is not 'exit 1':"$'\n'"$script"; return 1; }
  check_disk "$disk" "e2e-$name" "$id" "$fw" || { fail "disk contents"; return 1; }
  local tr; tr=$(now)
  vm "$name" "$fw" "$ns" "$mac" "$tap" "$disk" "$d/serial2.log" -no-reboot
  local q2=$VMPID
  wait_for 120 "iPXE to leave for local disk on the second boot" grep -q "nothing to install, booting from local disk" "$d/serial2.log" ||
    { serial=$d/serial2.log fail "second boot"; return 1; }
  TIMING "$name" "second boot -> iPXE exit to local disk" "$tr"
  local up="LPMOS-OS-UP hostname=e2e-$name key=$SSH_KEY userdata=$UD_MARKER root="
  # UEFI: OVMF tries each IPv4 boot option of the NIC (PXE, HTTP; lpmos
  # answers "exit 1" to each) before the disk's.
  wait_for 240 "the installed OS to print its seed" grep -aqF "$up" "$d/serial2.log" ||
    { serial=$d/serial2.log fail "the installed OS did not come up with the task's hostname, key and user_data (want: $up)"; return 1; }
  TIMING "$name" "second boot -> installed OS up" "$tr"
  grep -a "LPMOS-OS-" "$d/serial2.log" | tr -d '\r'
  if [ "$fw" = bios ]; then
    grep -aq "LPMOS-OS-BOOT firmware=bios" "$d/serial2.log" || { serial=$d/serial2.log fail "the installed OS did not boot through BIOS"; return 1; }
  else
    # the entry the firmware booted (BootCurrent) is the one the agent made
    grep -aq "LPMOS-OS-BOOT firmware=uefi BootCurrent=[0-9A-F]* BootOrder=[0-9A-F,]* desc=lpmos: debian 12" "$d/serial2.log" ||
      { serial=$d/serial2.log fail "the installed OS did not boot through the lpmos UEFI boot entry"; return 1; }
  fi
  wait_for 60 "the installed OS to power off" bash -c "! kill -0 $q2 2>/dev/null" || kill "$q2" 2>/dev/null
  wait "$q2" 2>/dev/null || true

  TIMING "$name" "whole scenario" "$t_scenario"
  echo "PASS [$name]"
}

TIMING() { echo "TIMING $1: $2 $(secs "$3" "$(now)")s"; }

# jqok FILTER [ARGS]: jq -e on stdin that also fails on empty input
# (jq 1.6 -e exits 0 when it reads nothing).
jqok() { local in; in=$(cat); [ -n "$in" ] && jq -e "$@" <<<"$in" >/dev/null; }

# check_hw JSON MAC: QEMU's DMI, one virtio disk (vda), the NIC with MAC.
check_hw() {
  local hw=$1 mac=$2
  [ -n "$hw" ] && [ "$hw" != null ] || { echo "no hardware report"; return 1; }
  jq -c '{vendor: .dmi.vendor, product: .dmi.product, boot: .boot_mode, disks: [.disks[] | {name, size_bytes}], nics: [.nics[] | {name, mac, driver}]}' <<<"$hw"
  jq -e '.dmi.vendor | test("QEMU")' <<<"$hw" >/dev/null || { echo "DMI vendor is not QEMU"; return 1; }
  jq -e '[.disks[]] | length == 1 and .[0].name == "vda" and .[0].size_bytes == 134217728' <<<"$hw" >/dev/null ||
    { echo "want exactly one disk, vda, 128 MiB"; return 1; }
  jq -e --arg mac "$mac" '[.nics[] | select(.mac == $mac)] | length == 1' <<<"$hw" >/dev/null || { echo "no NIC with MAC $mac"; return 1; }
}

# check_disk DISK HOSTNAME TASK FIRMWARE: the image is on the disk (the
# boot code, the partition array, the root file system's content), the
# NoCloud seed is in its root, and under UEFI the agent added the
# removable fallback \EFI\BOOT\BOOTX64.EFI next to \EFI\lpmos\grubx64.efi.
check_disk() {
  local disk=$1 host=$2 task=$3 fw=$4
  cmp -n 440 "$IMG" "$disk" || { echo "MBR boot code differs from the image"; return 1; }
  # LBA 2 up to the first partition: the GPT partition array and the gap
  # (the headers themselves change: the backup GPT moves to the disk's end).
  cmp -i $((2 * 512)) -n $(((FIRST_LBA - 2) * 512)) "$IMG" "$disk" || { echo "GPT partition array or BIOS boot partition differs from the image"; return 1; }
  [ "$(dd if="$disk" bs=512 skip=1 count=1 status=none | head -c 8)" = "EFI PART" ] || { echo "no primary GPT header"; return 1; }
  local part; part=$(mktemp -p "$W" part.XXXX)
  dd if="$disk" of="$part" bs=512 skip="$ROOT_START" count="$ROOT_SECTORS" status=none
  local marker meta
  marker=$(debugfs -R "cat /root/e2e-marker" "$part" 2>/dev/null)
  [ "$marker" = "$IMG_MARKER" ] || { echo "image content missing on the disk (/root/e2e-marker = '$marker')"; rm -f "$part"; return 1; }
  meta=$(debugfs -R "cat /var/lib/cloud/seed/nocloud/meta-data" "$part" 2>/dev/null)
  rm -f "$part"
  echo "meta-data: $(tr '\n' ' ' <<<"$meta")"
  grep -q "local-hostname: \"$host\"" <<<"$meta" || { echo "NoCloud meta-data lacks local-hostname $host"; return 1; }
  grep -q "instance-id: \"$task\"" <<<"$meta" || { echo "NoCloud meta-data lacks instance-id $task"; return 1; }
  local esp; esp=$(mdir -b -/ -i "$disk@@$((ESP_START * 512))" ::/EFI 2>&1 | tr '\n' ' ')
  echo "ESP: $esp"
  [[ $esp == *"/EFI/lpmos/grubx64.efi"* ]] || { echo "the ESP lost \\EFI\\lpmos\\grubx64.efi"; return 1; }
  if [ "$fw" = bios ]; then
    [[ $esp != *"/EFI/BOOT/"* ]] || { echo "a BIOS install changed the ESP"; return 1; }
  else
    [[ $esp == *"/EFI/BOOT/BOOTX64.EFI"* ]] || { echo "no removable fallback \\EFI\\BOOT\\BOOTX64.EFI on the ESP"; return 1; }
    cmp -s <(mtype -i "$disk@@$((ESP_START * 512))" ::/EFI/lpmos/grubx64.efi) <(mtype -i "$disk@@$((ESP_START * 512))" ::/EFI/BOOT/BOOTX64.EFI) ||
      { echo "\\EFI\\BOOT\\BOOTX64.EFI is not a copy of the loader"; return 1; }
  fi
}

# --- power-ipmi: a real IPMI BMC powers the VM --------------------------------
# OpenIPMI's ipmi_sim is the VM's BMC: IPMI-over-LAN (RMCP+) on
# 127.0.0.1:$BMC_PORT inside the namespace (where lpmos runs), a fresh state
# dir per run, and a chassis_control program (below) that is the VM's power:
# power on starts qemu with the boot device the BMC was given (PXE: -boot
# order=n; disk, IPMI's "default hard drive": order=c; none: order=cn), power
# off stops it, a power cycle is off and, a second later, on (ipmi_sim's own
# timer); reset is off + on. qemu's BMC link carries no boot device and
# SeaBIOS never reads IPMI boot flags, so the device is applied from here,
# like the board's firmware would; it stays until changed (ipmi_sim passes
# the device only, not IPMI's once/persistent bit). qemu's ipmi-bmc-extern device is linked to
# ipmi_sim over a chardev (the board's KCS interface). -no-reboot: a reboot
# of the guest is a power-off the BMC then reports.
# The flow is hands-free: the task names the BMC; the region sets PXE and
# powers the VM on, the agent of a power-managed task leaves the reboot to
# the region, which sets disk and power-cycles the VM into the installed OS.
# (IPMI passwords are at most 20 bytes)
BMC_PORT=623 BMC_VM_PORT=9002 BMC_USER=admin
BMC_PASS=pw-$(printf %04x%04x $RANDOM $RANDOM) BMC_BAD_PASS=bad-$(printf %04x%04x $RANDOM $RANDOM)

# write_chassis_control DIR: the program ipmi_sim runs as
# "DIR/chassis_control 0x20 get power boot" (it answers "name:value" lines)
# and "... set power 0|1", "set reset 1", "set boot pxe|default|none".
# DIR/vm.conf holds the qemu command (QEMU), the e2e PID file (PIDS) and
# MARK, a string only this VM's qemu command line holds: a pid in vm.pid
# counts as the VM only while its command line holds MARK (pid_max is 32768
# here: the pid of a qemu that exited, say after its guest powered itself
# off, can belong to any process a while later).
# Every call and power-on goes to DIR/calls.log; power-on N's console to
# DIR/serial.N.log.
write_chassis_control() {
  cat >"$1/chassis_control" <<'EOF'
#!/usr/bin/env bash
set -u
d=$(cd "$(dirname "$0")" && pwd)
. "$d/vm.conf"
echo "$(date +%T.%3N) $*" >>"$d/calls.log"
while [ $# -gt 0 ] && [ "$1" != get ] && [ "$1" != set ]; do shift; done
op=${1:-}; [ $# -gt 0 ] && shift
vmpid() { local p; { read -r p <"$d/vm.pid"; } 2>/dev/null && [ -n "$p" ] && echo "$p"; }
# alive PID: PID is this VM's qemu (a zombie, whose command line is empty,
# is not; nor is another process that got the pid since)
alive() { grep -qaF -- "$MARK" "/proc/$1/cmdline" 2>/dev/null; }
# on while this VM's qemu process lives
running() { local p; p=$(vmpid) && alive "$p"; }
power_on() {
  running && return 0
  local boot order n
  boot=$(cat "$d/boot" 2>/dev/null || echo none)
  case $boot in pxe) order=n ;; default) order=c ;; *) order=cn ;; esac
  n=$(( $(cat "$d/power-ons" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$d/power-ons"
  echo "$(date +%T.%3N) power-on $n boot=$boot -boot order=$order" >>"$d/calls.log"
  "${QEMU[@]}" -boot "order=$order" </dev/null >"$d/serial.$n.log" 2>&1 &
  echo $! >"$d/vm.pid"; echo $! >>"$PIDS"
}
# Off means the qemu process is gone: vm.pid is removed only then, so a
# "get power" never answers off while qemu still runs. (It used to send
# SIGKILL after 5 s and remove vm.pid at once: a qemu that had not exited
# on SIGTERM within 5 s, as under TCG on a loaded box, was still being
# torn down when the BMC already said off.)
power_off() {
  local p how=off end; p=$(vmpid) || return 0
  if ! alive "$p"; then
    how="off (was off already)"
  else
    kill "$p" 2>/dev/null
    end=$((SECONDS + 5))
    while alive "$p" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    if alive "$p"; then
      how="off (no exit within 5 s of SIGTERM: SIGKILL)"
      kill -9 "$p" 2>/dev/null
      end=$((SECONDS + 30))
      while alive "$p" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    fi
  fi
  if alive "$p"; then
    echo "$(date +%T.%3N) power-off FAILED: qemu $p still runs 30 s after SIGKILL" >>"$d/calls.log"
    return 1
  fi
  rm -f "$d/vm.pid"
  echo "$(date +%T.%3N) power-$how" >>"$d/calls.log"
}
case $op in
get)
  for p in "$@"; do
    case $p in
      power) if running; then echo power:1; else echo power:0; fi ;;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo none)" ;;
      *) echo "$p:0" ;;
    esac
  done ;;
set)
  while [ $# -gt 1 ]; do
    case $1 in
      power) if [ "$2" = 1 ]; then power_on; else power_off || exit 1; fi ;;
      reset) if running; then power_off || exit 1; power_on; fi ;;
      boot) echo "$2" >"$d/boot" ;;
    esac
    shift 2
  done ;;
*) echo "usage: $0 ADDR get NAME... | set NAME VALUE..." >&2; exit 1 ;;
esac
EOF
  chmod 755 "$1/chassis_control"
}

power_scenario() {
  local name=$1 fw=$2 ns=$3 mac=$4
  local d=$W/$name tap=t${mac//:/}; tap=${tap:0:15}
  local b=$d/bmc t_scenario; t_scenario=$(now)
  local disk=$d/disk.img serial=$d/bmc/serial.1.log
  fail() {
    echo "FAIL [$name]: $*"
    echo "--- BMC calls ($b/calls.log)"; tail -n 20 "$b/calls.log" 2>/dev/null
    echo "--- last lines of the VM serial console ($serial)"; tail -n 40 "$serial" 2>/dev/null | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g'
    echo "--- last lines of ipmi_sim ($b/ipmi_sim.log)"; tail -n 10 "$b/ipmi_sim.log" 2>/dev/null
    echo "--- last lines of lpmos ($W/$ns/lpmos.log)"; tail -n 25 "$W/$ns/lpmos.log"
    return 1
  }
  trap '[[ $BASH_COMMAND == return* ]] || echo "FAIL [$name]: line $LINENO: $BASH_COMMAND failed"' ERR
  mkdir -p "$b/state"
  mktap "$ns" "$tap"
  truncate -s 128M "$disk"
  printf '%s\n' "$BMC_PASS" >"$b/password"; chmod 600 "$b/password"
  local QEMU=(qemu-system-x86_64 -accel tcg -machine pc -m 512 -smp 1 -nographic -no-reboot
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=$mac"
    -drive "file=$disk,if=none,id=d0,format=raw,cache=unsafe" -device virtio-blk-pci,drive=d0
    -chardev "socket,id=ipmi0,host=127.0.0.1,port=$BMC_VM_PORT,reconnect=10"
    -device ipmi-bmc-extern,chardev=ipmi0,id=bmc0 -device isa-ipmi-kcs,bmc=bmc0)
  local PIDS=$PIDFILE MARK="file=$disk,if=none"
  declare -p QEMU PIDS MARK >"$b/vm.conf"
  write_chassis_control "$b"
  cat >"$b/lan.conf" <<EOF
name "lpmos-e2e"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $BMC_PORT
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcd05
  endlan
  serial 15 127.0.0.1 $BMC_VM_PORT codec VM
  chassis_control "$b/chassis_control 0x20"
  user 2 true "$BMC_USER" "$BMC_PASS" admin 10 none md2 md5 straight
EOF
  printf 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n' >"$b/bmc.emu"
  # -n: stdin is not a tty (else ipmi_sim asserts)
  ip netns exec "$NSP-$ns" ipmi_sim -n -c "$b/lan.conf" -f "$b/bmc.emu" -s "$b/state" </dev/null >"$b/ipmi_sim.log" 2>&1 &
  local simpid=$!
  track $simpid
  # ipmitool (Debian's client, not lpmos) only cross-checks; -C 3 or every
  # call stalls ~10 s on cipher suite discovery; -E: the password from the
  # environment. Its exit code alone proves nothing (a refused boot device
  # override exits 0): the checks read what it prints.
  ipmi() { IPMI_PASSWORD=$BMC_PASS ip netns exec "$NSP-$ns" timeout 20 ipmitool -I lanplus -C 3 \
    -H 127.0.0.1 -p "$BMC_PORT" -U "$BMC_USER" -E "$@" 2>&1; }
  power_is() { ipmi chassis power status | grep -qx "Chassis Power is $1"; }
  bootdev() { ipmi chassis bootparam get 5 | sed -n 's/^ *- Boot Device Selector *: *//p'; }
  wait_for 20 "ipmi_sim to answer IPMI-over-LAN on 127.0.0.1:$BMC_PORT" power_is off || { fail "BMC did not start: $(ipmi chassis power status)"; return 1; }
  echo "BMC: ipmi_sim on 127.0.0.1:$BMC_PORT (namespace $NSP-$ns), chassis power off"

  # The task names the machine's BMC (the password from a file, never on the
  # command line): from here on lpmos alone drives the power; the script
  # only watches the VM's console and cross-checks the BMC with ipmitool.
  local id tq; tq=$(now)
  UD_MARKER="# lpmos-e2e-marker $name-$$-$RANDOM"
  id=$(ip netns exec "$NSP-$ns" "$LPMOS" task create --server https://127.0.0.1:8080 --data-dir "$W/$ns/data" -o json \
    --mac "$mac" --os debian --os-version 12 --hostname "e2e-$name" --ssh-key "$SSH_KEY" \
    --user-data "#cloud-config"$'\n'"$UD_MARKER"$'\n' \
    --bmc "ipmi://$BMC_USER@127.0.0.1:$BMC_PORT" --bmc-password-file "$b/password" | jq -r .id) || { fail "lpmos task create --bmc"; return 1; }
  [ -n "$id" ] && [ "$id" != null ] || { fail "lpmos task create --bmc: no id"; return 1; }
  echo "task $id for $mac, BMC ipmi://$BMC_USER@127.0.0.1:$BMC_PORT"

  # The region sets PXE once and powers the VM on.
  wait_for 60 "lpmos (the region) to power the VM on through the BMC" power_is on || { fail "the region did not power the VM on"; return 1; }
  TIMING "$name" "task created -> VM powered on by lpmos over IPMI" "$tq"
  [ "$(bootdev)" = "Force PXE" ] || { fail "ipmitool: boot device after the region's power-on is '$(bootdev)', want Force PXE"; return 1; }
  grep -q "power-on 1 boot=pxe -boot order=n" "$b/calls.log" || { fail "the BMC did not start the VM network-first"; return 1; }
  echo "ipmitool: power on, boot device Force PXE; BMC: $(grep -o 'power-on 1 .*' "$b/calls.log")"
  # qemu's ipmi-bmc-extern device is connected to the BMC (the board's KCS link)
  bmc_link() { [ -n "$(ip netns exec "$NSP-$ns" ss -Htn state established "( sport = :$BMC_VM_PORT )")" ]; }
  wait_for 15 "qemu's BMC link to ipmi_sim (127.0.0.1:$BMC_VM_PORT)" bmc_link || { fail "qemu did not connect its ipmi-bmc-extern chardev to ipmi_sim"; return 1; }

  has_hw() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jqok '.status.status == "pending_approval" and (.hardware.nics | length > 0)'; }
  wait_for 240 "status pending_approval with the hardware report" has_hw || { fail "hardware report"; return 1; }
  TIMING "$name" "task created -> hardware in API" "$tq"
  check_hw "$(api "$ns" GET "/api/v1/tasks/$id" | jq .hardware)" "$mac" || { fail "hardware report"; return 1; }
  local ta; ta=$(now)
  api "$ns" PUT "/api/v1/tasks/$id/approve" >/dev/null || { fail "approve"; return 1; }
  ended() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jqok '.status.status | IN("completed","failed","cancelled")'; }
  wait_for 300 "the task to end" ended || { fail "install"; return 1; }
  local detail; detail=$(api "$ns" GET "/api/v1/tasks/$id")
  [ "$(jq -r .status.status <<<"$detail")" = completed ] || { fail "task ended $(jq -c .status <<<"$detail")"; return 1; }
  TIMING "$name" "approve -> completed" "$ta"
  grep -q "install complete" "$serial" || { fail "no 'install complete' on the console"; return 1; }
  grep -aq "this machine is power-managed: the region reboots it" "$serial" ||
    { fail "the agent did not say it leaves the reboot to the region"; return 1; }

  # After completed the region sets the boot device to disk and power-cycles
  # the VM (its agent does not reboot a power-managed machine itself).
  local tr; tr=$(now)
  wait_for 90 "lpmos (the region) to power the VM on again" grep -q "power-on 2 " "$b/calls.log" ||
    { fail "the region did not power-cycle the VM after completed"; return 1; }
  TIMING "$name" "completed -> VM power-cycled by lpmos" "$tr"
  serial=$b/serial.2.log
  grep -q "power-on 2 boot=default -boot order=c" "$b/calls.log" || { fail "the BMC did not start the VM disk-first"; return 1; }
  [ "$(bootdev)" = "Force Boot from default Hard-Drive" ] ||
    { fail "ipmitool: boot device after the region's reboot is '$(bootdev)', want Force Boot from default Hard-Drive"; return 1; }
  power_is on || { fail "ipmitool: not on after the region's power cycle"; return 1; }
  echo "ipmitool: power on, boot device Force Boot from default Hard-Drive; BMC: $(grep -o 'power-on 2 .*' "$b/calls.log")"
  # the VM was still on when lpmos cycled it: a power-off by the BMC, not by the guest
  sed -n '/power-on 1 /,/power-on 2 /p' "$b/calls.log" | grep -q " set power 0" ||
    { fail "no BMC power-off between the two power-ons (did the agent reboot the VM itself?)"; return 1; }
  local up="LPMOS-OS-UP hostname=e2e-$name key=$SSH_KEY userdata=$UD_MARKER root="
  wait_for 180 "the installed OS to print its seed" grep -aqF "$up" "$serial" ||
    { fail "the installed OS did not come up with the task's hostname, key and user_data (want: $up)"; return 1; }
  TIMING "$name" "completed -> installed OS up" "$tr"
  grep -a "LPMOS-OS-" "$serial" | tr -d '\r'
  grep -aq "LPMOS-OS-BOOT firmware=bios" "$serial" || { fail "the installed OS did not boot through BIOS"; return 1; }
  # straight from the disk: SeaBIOS never ran the NIC's boot ROM (iPXE)
  grep -aq "Booting from Hard Disk" "$serial" && ! grep -aq "Booting from ROM" "$serial" &&
    ! grep -aq "nothing to install, booting from local disk" "$serial" || { fail "the second boot went through PXE, not straight to the disk"; return 1; }
  grep -aq "Booting from ROM" "$b/serial.1.log" || { serial=$b/serial.1.log fail "the first boot did not start from the NIC"; return 1; }

  # Every power action is an event of the task; the password is nowhere.
  detail=$(api "$ns" GET "/api/v1/tasks/$id")
  echo "power events:"; jq -r '.events[] | select(.kind=="power") | "  " + .message' <<<"$detail"
  local ev; ev=$(jq -r '[.events[] | select(.kind=="power") | .message] | join("\n")' <<<"$detail")
  grep -q "^boot into PXE (attempt 1): next boot from pxe, powered on" <<<"$ev" ||
    { fail "no power event for the PXE boot (want 'boot into PXE (attempt 1): next boot from pxe, powered on ...')"; return 1; }
  grep -q "^reboot into the installed OS: next boot from disk, power cycled" <<<"$ev" ||
    { fail "no power event for the reboot to disk (want 'reboot into the installed OS: next boot from disk, power cycled ...')"; return 1; }
  ! grep -q "failed" <<<"$ev" || { fail "a power action failed"; return 1; }
  jq -e '.bmc.password_set == true and .bmc.address == "127.0.0.1:'"$BMC_PORT"'"' <<<"$detail" >/dev/null || { fail "task bmc: $(jq -c .bmc <<<"$detail")"; return 1; }
  ! grep -qF "$BMC_PASS" <<<"$detail" || { fail "the BMC password is in the task's API answer"; return 1; }
  ! grep -qF "$BMC_PASS" "$W/$ns/lpmos.log" || { fail "the BMC password is in lpmos's log"; return 1; }

  # lpmos powers it off through the server; the BMC agrees, qemu is gone.
  # (The installed OS powers itself off once it printed its seed, so the VM
  # may be off already; either way no qemu of this VM may run after it.)
  # The VM's qemu by its command line (its disk), not by a pid that may have
  # been reused since: any qemu of this VM, zombies (empty command line) not.
  vm_qemu() { pgrep -af -- "file=$disk,if=none"; }
  local out
  out=$(ip netns exec "$NSP-$ns" "$LPMOS" power off "$id" --server https://127.0.0.1:8080 --data-dir "$W/$ns/data") || { fail "lpmos power off $id: $out"; return 1; }
  echo "lpmos: $out"
  wait_for 30 "the region to power the VM off" power_is off || { fail "ipmitool: not off after lpmos power off $id"; return 1; }
  ! vm_qemu >/dev/null || { fail "qemu still runs after power off: $(vm_qemu)"; return 1; }
  poff_event() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jq -r '.events[] | select(.kind=="power") | .message' | grep -q "^power off (requested by .*): powered off"; }
  wait_for 30 "the power off event" poff_event || { fail "no 'power off (requested by ...): powered off' event"; return 1; }
  polled_off() { api "$ns" GET "/api/v1/tasks/$id/power" 2>/dev/null | jqok '.state == "off"'; }
  wait_for 60 "GET /api/v1/tasks/$id/power to say off" polled_off || { fail "power state in the API: $(api "$ns" GET "/api/v1/tasks/$id/power")"; return 1; }
  echo "lpmos power status $id: $(ip netns exec "$NSP-$ns" "$LPMOS" power status "$id" --server https://127.0.0.1:8080 --data-dir "$W/$ns/data")"

  # Bad input: a wrong BMC password. The action fails with an event naming
  # the BMC and what it answered, the machine is not touched, the task is
  # kept, and once the BMC is fixed (lpmos power set-bmc) the same action
  # works.
  local tb lp; tb=$(now)
  lp() { ip netns exec "$NSP-$ns" "$LPMOS" power "$@" --server https://127.0.0.1:8080 --data-dir "$W/$ns/data"; }
  printf '%s\n' "$BMC_BAD_PASS" >"$b/wrong-password"
  out=$(lp set-bmc "$id" --bmc "ipmi://$BMC_USER@127.0.0.1:$BMC_PORT" --bmc-password-file "$b/wrong-password" 2>&1) ||
    { fail "lpmos power set-bmc $id (wrong password): $out"; return 1; }
  out=$(lp on "$id") || { fail "lpmos power on $id (wrong password): $out"; return 1; }
  refused() { api "$ns" GET "/api/v1/tasks/$id" 2>/dev/null | jq -r '.events[] | select(.kind=="power") | .message' |
    grep -E "^power on \(requested by [^)]*\) failed: .*127\.0\.0\.1:$BMC_PORT.*login refused"; }
  wait_for 90 "the failed power-on event (wrong BMC password)" refused >/dev/null || { fail "no 'power on ... failed ... login refused' event naming the BMC"; return 1; }
  echo "event: $(refused | tail -1)"
  power_is off || { fail "ipmitool: the machine changed power with a wrong password"; return 1; }
  ! grep -q "power-on 3 " "$b/calls.log" || { fail "the BMC started the VM with a wrong password"; return 1; }
  [ "$(api "$ns" GET "/api/v1/tasks/$id" | jq -r .status.status)" = completed ] || { fail "the task changed after a failed power action"; return 1; }
  TIMING "$name" "wrong BMC password -> failure event" "$tb"
  out=$(lp set-bmc "$id" --bmc "ipmi://$BMC_USER@127.0.0.1:$BMC_PORT" --bmc-password-file "$b/password" 2>&1) ||
    { fail "lpmos power set-bmc $id (fixed): $out"; return 1; }
  out=$(lp on "$id") || { fail "lpmos power on $id (fixed): $out"; return 1; }
  wait_for 30 "the region to power the VM on with the fixed BMC" power_is on || { fail "not on after the BMC was fixed"; return 1; }
  grep -q "power-on 3 boot=default -boot order=c" "$b/calls.log" || { fail "the BMC did not start the VM disk-first"; return 1; }
  out=$(lp off "$id") || { fail "lpmos power off $id: $out"; return 1; }
  wait_for 30 "the region to power the VM off" power_is off || { fail "not off after lpmos power off"; return 1; }
  TIMING "$name" "wrong BMC password -> fixed -> on/off again" "$tb"

  detail=$(api "$ns" GET "/api/v1/tasks/$id")
  echo "all power events:"; jq -r '.events[] | select(.kind=="power") | "  " + .message' <<<"$detail"
  for pw in "$BMC_PASS" "$BMC_BAD_PASS"; do
    ! grep -qF "$pw" <<<"$detail" || { fail "a BMC password is in the task's API answer"; return 1; }
    ! grep -qF "$pw" "$W/$ns/lpmos.log" || { fail "a BMC password is in lpmos's log"; return 1; }
  done
  echo "BMC power and boot calls (ipmi_sim -> chassis_control):"; grep -v ' get ' "$b/calls.log" | sed 's/^/  /'
  check_disk "$disk" "e2e-$name" "$id" "$fw" || { fail "disk contents"; return 1; }

  # The BMC stops answering: the region's poll stores it, the CLI says it.
  local td; td=$(now)
  kill "$simpid" 2>/dev/null; wait "$simpid" 2>/dev/null || true
  bmc_down() { api "$ns" GET "/api/v1/tasks/$id/power" 2>/dev/null | jqok '.state == "unknown" and (.error // "" | contains("127.0.0.1:'"$BMC_PORT"'"))'; }
  wait_for 60 "GET /api/v1/tasks/$id/power to report the BMC not answering" bmc_down ||
    { fail "power state in the API with the BMC gone: $(api "$ns" GET "/api/v1/tasks/$id/power")"; return 1; }
  TIMING "$name" "BMC gone -> the region's poll reports it" "$td"
  echo "lpmos power status $id: $(lp status "$id")"
  TIMING "$name" "whole scenario" "$t_scenario"
  echo "PASS [$name]"
}

SSH_KEY="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eTestKey e2e@lpmos"

t=$(now)
log "running: $MODES"
declare -A SPID
for m in $MODES; do
  read -r name fw ns mac kind < <(printf '%s\n' "${SCENARIOS[@]}" | awk -v m="$m" '$1==m')
  mkdir -p "$W/$name"
  scenario "$name" "$fw" "$ns" "$mac" "$kind" >"$W/$name/run.log" 2>&1 &
  SPID[$name]=$!
  track $!
done
failed=()
for name in "${!SPID[@]}"; do
  if wait "${SPID[$name]}"; then :; else failed+=("$name"); fi
done
for m in $MODES; do
  echo "=== $m"
  cat "$W/$m/run.log"
done
timing scenarios "$t"
((${#failed[@]} == 0)) || die "failed: ${failed[*]}"
log "all modes passed: $MODES"
