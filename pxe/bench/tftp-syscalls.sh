#!/bin/bash
# tftp-syscalls.sh counts what a sequential TFTP download costs each
# server, with perf stat attached to it: system calls per block, server CPU
# (task-clock) per file and per block, context switches per block. The
# servers are lpmos's (this tree's pxe/bench/tftpd), lpmos waiting in the
# netpoller only (TFTPD_NETPOLL=1), dnsmasq, and with BEFORE= the tftpd of
# that git revision; downloads by curl, interleaved server by server,
# inside a network namespace this script creates (loopback only). These
# counts hold on a shared machine, unlike wall times. Needs root, perf,
# iproute2, curl, dnsmasq-base, go.
#
#   bash pxe/bench/tftp-syscalls.sh                     # N=200 files, blksize 512 and 1468
#   N=100 BLKS=512 BEFORE=main bash pxe/bench/tftp-syscalls.sh
#   HIST=1 N=30 bash pxe/bench/tftp-syscalls.sh         # system calls per block by number instead
#
# (strace -c slows the traced server so much that ACKs are already
# waiting when it looks: the wait's system calls go uncounted. perf's
# raw_syscalls tracepoint does not.)
set -eu

N=${N:-200}
BLKS=${BLKS:-512 1468}
BEFORE=${BEFORE:-}
HIST=${HIST:-}
cd "$(dirname "$0")/../.."
. pxe/bench/tftp-bench-setup.sh
tftp_bench_setup lpmos-sc ip curl dnsmasq go perf
servers="lpmos lpmos-netpoll dnsmasq"
[ -z "$BEFORE" ] || servers="before $servers"

for s in $servers; do
	case $s in
	lpmos) ip netns exec "$ns" "$tmp/tftpd" 127.0.0.1:6969 & ;;
	lpmos-netpoll) ip netns exec "$ns" env TFTPD_NETPOLL=1 "$tmp/tftpd" 127.0.0.1:6970 & ;;
	before) ip netns exec "$ns" "$tmp/before-tftpd" 127.0.0.1:6971 & ;;
	dnsmasq) ip netns exec "$ns" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
		--pid-file= --enable-tftp --tftp-root="$tmp/root" --listen-address=127.0.0.1 \
		--bind-interfaces --quiet-tftp --log-facility=/dev/null 2>/dev/null & ;;
	esac
	echo $! >"$tmp/$s.pid"
	pids="$pids $!"
done
pidof_() { cat "$tmp/$1.pid"; }
url() {
	case $1 in
	lpmos) echo tftp://127.0.0.1:6969/undionly.kpxe ;;
	lpmos-netpoll) echo tftp://127.0.0.1:6970/undionly.kpxe ;;
	before) echo tftp://127.0.0.1:6971/undionly.kpxe ;;
	dnsmasq) echo tftp://127.0.0.1:69/undionly.kpxe ;;
	esac
}
tftp_bench_wait_all

echo "undionly.kpxe: $size bytes; N=$N; servers: $servers${BEFORE:+ (before = $BEFORE)}"
for blk in $BLKS; do
	args=""
	[ "$blk" = 512 ] || args="--tftp-blksize $blk"
	blocks=$(((size / blk + 1) * N))
	ppids=""
	for s in $servers; do
		if [ -n "$HIST" ]; then
			perf record -q -e raw_syscalls:sys_enter -p "$(pidof_ "$s")" -o "$tmp/$s.rec" 2>/dev/null &
		else
			perf stat -x, -e raw_syscalls:sys_enter,task-clock,context-switches -p "$(pidof_ "$s")" -o "$tmp/$s.st" 2>/dev/null &
		fi
		ppids="$ppids $!"
	done
	sleep 0.5
	echo "blksize $blk, loadavg at start: $(cat /proc/loadavg)"
	i=0
	while [ "$i" -lt "$N" ]; do
		for s in $servers; do
			# shellcheck disable=SC2086
			ip netns exec "$ns" curl -fsS --max-time 20 $args -o /dev/null "$(url "$s")"
		done
		i=$((i + 1))
	done
	for p in $ppids; do kill -INT "$p"; wait "$p" 2>/dev/null || true; done
	for s in $servers; do
		if [ -n "$HIST" ]; then
			echo "$s blksize $blk: system calls per block by number"
			perf script -i "$tmp/$s.rec" -F trace 2>/dev/null | sed -E 's/.*NR ([0-9]+).*/\1/' | sort | uniq -c | sort -rn |
				awk -v b="$blocks" '$1 / b >= 0.01 { printf "   NR %-4s %.3f\n", $2, $1 / b }'
		else
			awk -F, -v name="$s blksize $blk" -v b="$blocks" -v n="$N" '
				$3 == "raw_syscalls:sys_enter" { s = $1 } $3 == "task-clock" { c = $1 } $3 == "context-switches" { w = $1 }
				END { printf "%-28s syscalls %.2f/block  CPU %7.1f us/file %6.2f us/block  switches %.2f/block\n", name, s / b, c * 1000 / n, c * 1000 / b, w / b }' "$tmp/$s.st"
		fi
	done
	echo "loadavg at end: $(cat /proc/loadavg)"
done
