#!/bin/sh
# tftp-vs-dnsmasq.sh times TFTP downloads of undionly.kpxe from lpmos's TFTP
# server (package pxe) and from dnsmasq's, in the same run, with the same
# client (curl), inside a network namespace this script creates (loopback
# only; dnsmasq's TFTP port is fixed at 69, the namespace keeps it off the
# host). Needs root, iproute2, curl, dnsmasq-base, go, bc.
#
# Downloads are interleaved (one from each server in turn), so load from
# elsewhere on the machine falls on all servers alike; the ratio lines
# compare lpmos with dnsmasq within this run.
#
#   bash pxe/bench/tftp-vs-dnsmasq.sh              # N=200 downloads per case
#   N=50 C=50 R=3 bash pxe/bench/tftp-vs-dnsmasq.sh
#   BEFORE=main bash pxe/bench/tftp-vs-dnsmasq.sh  # also the server at that git revision
#   ALT=GOMAXPROCS=1 bash pxe/bench/tftp-vs-dnsmasq.sh  # also this build with that environment
#   RT=20 C=0 bash pxe/bench/tftp-vs-dnsmasq.sh    # servers and curl at SCHED_FIFO priority 20
#   SEQ=0 C=50 R=3 bash pxe/bench/tftp-vs-dnsmasq.sh  # the concurrent case only
#   ALT=TFTPD_SENDTO=1 bash pxe/bench/tftp-vs-dnsmasq.sh  # also lpmos sending with sendto, not io_uring
#
# RT: on a shared machine, runs the servers and the clients as real-time
# tasks (chrt -f RT), so other work does not preempt the transfers: the
# wall times then approach a quiet machine's. Use it with C=0 (50 real-time
# clients would starve everything else on the machine while they run).
#
# N: sequential downloads per server and blksize; C: concurrent clients in
# the concurrent case (0 skips it), each doing N/C downloads per round; R:
# rounds of the concurrent case, servers alternated.
set -eu

N=${N:-200}
C=${C:-50}
R=${R:-3}
BEFORE=${BEFORE:-}
ALT=${ALT:-}
RT=${RT:-}
SEQ=${SEQ:-1}
rt=""
[ -z "$RT" ] || rt="chrt -f $RT"
cd "$(dirname "$0")/../.."
. pxe/bench/tftp-bench-setup.sh
tftp_bench_setup lpmos-bench ip curl dnsmasq go bc
servers="lpmos dnsmasq"
[ -z "$BEFORE" ] || servers="before lpmos dnsmasq"
[ -z "$ALT" ] || servers="alt $servers"

# shellcheck disable=SC2086
ip netns exec "$ns" $rt "$tmp/tftpd" 127.0.0.1:6969 &
pid_lpmos=$!
pids="$pids $!"
if [ -n "$BEFORE" ]; then
	# shellcheck disable=SC2086
	ip netns exec "$ns" $rt "$tmp/before-tftpd" 127.0.0.1:6970 &
	pid_before=$!
	pids="$pids $!"
fi
if [ -n "$ALT" ]; then
	# shellcheck disable=SC2086
	ip netns exec "$ns" $rt env $ALT "$tmp/tftpd" 127.0.0.1:6971 &
	pid_alt=$!
	pids="$pids $!"
fi
# shellcheck disable=SC2086
ip netns exec "$ns" $rt dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
	--pid-file= --enable-tftp --tftp-root="$tmp/root" --listen-address=127.0.0.1 \
	--bind-interfaces --quiet-tftp --log-facility=/dev/null 2>"$tmp/dnsmasq.log" &
pid_dnsmasq=$!
pids="$pids $!"

# cpu SERVER: "ns-on-CPU voluntary-context-switches involuntary-context-switches"
# summed over the server's threads (/proc/PID/task/*/schedstat and status):
# the load-robust cost, unlike wall time on a shared machine. Involuntary
# switches count how often the server was preempted (e.g. by a client its
# send woke).
cpu() {
	eval "p=\$pid_$1"
	cat /proc/"$p"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.0f ", ns }'
	cat /proc/"$p"/task/*/status | awk '/^voluntary_ctxt_switches/ { n += $2 } /^nonvoluntary_ctxt_switches/ { m += $2 } END { print n, m }'
}

# cpustats CASE FILES: server CPU and wake-ups per downloaded file over CASE.
cpustats() {
	for s in $servers; do
		set -- $(cat "$tmp/$s.cpu0") $(cpu "$s")
		awk -v name="$s $CASE" -v n="$FILES" -v a="$1" -v b="$2" -v i="$3" -v c="$4" -v d="$5" -v j="$6" \
			'BEGIN { printf "%-30s server CPU %7.1f us/file  %6.1f wake-ups/file  %6.1f preempted/file\n", name, (c - a) / n / 1000, (d - b) / n, (j - i) / n }'
	done
}
cpu0() { for s in $servers; do cpu "$s" >"$tmp/$s.cpu0"; done; }

url() {
	case $1 in
	lpmos) echo tftp://127.0.0.1:6969/undionly.kpxe ;;
	before) echo tftp://127.0.0.1:6970/undionly.kpxe ;;
	alt) echo tftp://127.0.0.1:6971/undionly.kpxe ;;
	dnsmasq) echo tftp://127.0.0.1:69/undionly.kpxe ;;
	esac
}

tftp_bench_wait_all

# fetch SERVER OUT [curl args]: one download, "time_total size" appended to OUT.
fetch() {
	s=$1 out=$2
	shift 2
	# shellcheck disable=SC2086
	ip netns exec "$ns" $rt curl -fsS --max-time 20 "$@" -o /dev/null -w '%{time_total} %{size_download}\n' "$(url "$s")" >>"$out"
}

# stats NAME FILE: percentiles of the per-file times in FILE.
stats() {
	sort -n "$2" | awk -v name="$1" -v size="$size" '
		$2 != size { bad++ }
		{ t[NR] = $1; sum += $1 }
		END {
			if (bad) { printf "%s: %d downloads with the wrong size\n", name, bad; exit 1 }
			p50 = t[int((NR - 1) * 0.50) + 1]; p90 = t[int((NR - 1) * 0.90) + 1]; p99 = t[int((NR - 1) * 0.99) + 1]
			printf "%-30s n=%-5d p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  mean %7.2f ms\n",
				name, NR, p50 * 1000, p90 * 1000, p99 * 1000, sum / NR * 1000
		}'
}

# ratio CASE: lpmos (and before) over dnsmasq, p50 and mean.
ratio() {
	for s in $servers; do
		[ "$s" = dnsmasq ] && continue
		awk -v name="$s/dnsmasq $1" '
			FNR == 1 { f++ }
			{ t[f, FNR] = $1; n[f] = FNR; sum[f] += $1 }
			END {
				for (i = 1; i <= 2; i++) { m = n[i]; for (j = 1; j <= m; j++) v[j] = t[i, j]; asort_(v, m); p[i] = v[int((m - 1) * 0.5) + 1] }
				printf "%-30s p50 %.2f  mean %.2f\n", "ratio " name, p[1] / p[2], (sum[1] / n[1]) / (sum[2] / n[2])
			}
			function asort_(a, m,   i, j, x) { for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x } }
		' "$tmp/$s.$1" "$tmp/dnsmasq.$1"
	done
}

echo "undionly.kpxe: $size bytes; N=$N C=$C R=$R; curl $(curl --version | head -1 | cut -d' ' -f2); $(dnsmasq --version | head -1 | cut -d' ' -f1-3); servers: $servers${BEFORE:+ (before = $BEFORE)}${ALT:+ (alt = lpmos with $ALT)}${RT:+; servers and curl at SCHED_FIFO $RT}"
echo "loadavg at start: $(cat /proc/loadavg)"

blks="512 1468"
[ "$SEQ" != 0 ] || blks=""
for blk in $blks; do
	args=""
	[ "$blk" = 512 ] || args="--tftp-blksize $blk"
	cpu0
	i=0
	while [ "$i" -lt "$N" ]; do
		for s in $servers; do
			# shellcheck disable=SC2086
			fetch "$s" "$tmp/$s.seq$blk" $args
		done
		i=$((i + 1))
	done
	CASE="sequential blksize $blk" FILES=$N cpustats
	for s in $servers; do stats "$s sequential blksize $blk" "$tmp/$s.seq$blk"; done
	ratio "seq$blk"
	echo "loadavg: $(cat /proc/loadavg)"
done

if [ "$C" -gt 0 ]; then
	per=$(((N + C - 1) / C))
	cpu0
	r=0
	while [ "$r" -lt "$R" ]; do
		for s in $servers; do
			start=$(date +%s.%N)
			j=0
			wpids=""
			while [ "$j" -lt "$C" ]; do
				(
					k=0
					while [ "$k" -lt "$per" ]; do
						fetch "$s" "$tmp/$s.conc.$j"
						k=$((k + 1))
					done
				) &
				wpids="$wpids $!"
				j=$((j + 1))
			done
			for p in $wpids; do wait "$p"; done
			echo "$(echo "$(date +%s.%N) - $start" | bc) $size" >>"$tmp/$s.wall"
			cat "$tmp/$s".conc.* >>"$tmp/$s.conc"
			rm -f "$tmp/$s".conc.*
		done
		r=$((r + 1))
	done
	CASE="$C concurrent" FILES=$((per * C * R)) cpustats
	for s in $servers; do
		stats "$s $C concurrent, per file" "$tmp/$s.conc"
		awk -v name="$s $C concurrent, round wall" '{ sum += $1 } END { printf "%-30s n=%-5d mean %.2f s\n", name, NR, sum / NR }' "$tmp/$s.wall"
	done
	ratio conc
	echo "loadavg: $(cat /proc/loadavg)"
fi
