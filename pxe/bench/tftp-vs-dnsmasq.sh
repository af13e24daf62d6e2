#!/bin/sh
# tftp-vs-dnsmasq.sh times TFTP downloads of undionly.kpxe from lpmos's TFTP
# server (package pxe) and from dnsmasq's, in the same run, with the same
# client (curl), inside a network namespace this script creates (loopback
# only; dnsmasq's TFTP port is fixed at 69, the namespace keeps it off the
# host). Needs root, iproute2, curl, dnsmasq-base, go.
#
#   sh pxe/bench/tftp-vs-dnsmasq.sh            # N=200 downloads per case
#   N=50 sh pxe/bench/tftp-vs-dnsmasq.sh
set -eu

N=${N:-200}
cd "$(dirname "$0")/../.."
for cmd in ip curl dnsmasq go; do
	command -v "$cmd" >/dev/null || { echo "missing $cmd" >&2; exit 1; }
done

tmp=$(mktemp -d)
ns="lpmos-bench-$$"
lpid=""
dpid=""
cleanup() {
	[ -n "$lpid" ] && kill "$lpid" 2>/dev/null && wait "$lpid" 2>/dev/null
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

go build -o "$tmp/lpmos-tftpd" ./pxe/bench/tftpd
mkdir "$tmp/root"
cp pxe/ipxe/undionly.kpxe "$tmp/root/"
chmod 755 "$tmp" "$tmp/root"
chmod 644 "$tmp/root/undionly.kpxe"
size=$(wc -c <"$tmp/root/undionly.kpxe")

ip netns add "$ns"
ip -n "$ns" link set lo up

ip netns exec "$ns" "$tmp/lpmos-tftpd" 127.0.0.1:6969 &
lpid=$!
ip netns exec "$ns" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
	--pid-file= --enable-tftp --tftp-root="$tmp/root" --listen-address=127.0.0.1 \
	--bind-interfaces --quiet-tftp --log-facility=/dev/null 2>"$tmp/dnsmasq.log" &
dpid=$!

# Wait until both answer.
for url in tftp://127.0.0.1:6969/undionly.kpxe tftp://127.0.0.1:69/undionly.kpxe; do
	i=0
	until ip netns exec "$ns" curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null; do
		i=$((i + 1))
		[ "$i" -lt 50 ] || { echo "no answer from $url" >&2; exit 1; }
		sleep 0.1
	done
done

# run NAME URL [curl args]: N timed downloads, each checked for size.
run() {
	name=$1 url=$2
	shift 2
	out="$tmp/$name.times"
	: >"$out"
	start=$(date +%s.%N)
	i=0
	while [ "$i" -lt "$N" ]; do
		ip netns exec "$ns" curl -fsS --max-time 20 "$@" -o "$tmp/dl" -w '%{time_total}\n' "$url" >>"$out"
		got=$(wc -c <"$tmp/dl")
		[ "$got" -eq "$size" ] || { echo "$name: got $got bytes, want $size" >&2; exit 1; }
		i=$((i + 1))
	done
	end=$(date +%s.%N)
	sort -n "$out" | awk -v name="$name" -v n="$N" -v wall="$(echo "$end - $start" | bc)" -v size="$size" '
		{ t[NR] = $1; sum += $1 }
		END {
			p50 = t[int((NR - 1) * 0.50) + 1]; p90 = t[int((NR - 1) * 0.90) + 1]; p99 = t[int((NR - 1) * 0.99) + 1]
			printf "%-28s n=%d  p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  mean %6.2f ms  %6.1f MB/s at p50\n",
				name, n, p50 * 1000, p90 * 1000, p99 * 1000, sum / NR * 1000, size / p50 / 1e6
		}'
}

echo "undionly.kpxe: $size bytes, $N downloads per case, curl $(curl --version | head -1 | cut -d' ' -f2), $(dnsmasq --version | head -1)"
run lpmos-blksize512 tftp://127.0.0.1:6969/undionly.kpxe
run dnsmasq-blksize512 tftp://127.0.0.1:69/undionly.kpxe
run lpmos-blksize1468 tftp://127.0.0.1:6969/undionly.kpxe --tftp-blksize 1468
run dnsmasq-blksize1468 tftp://127.0.0.1:69/undionly.kpxe --tftp-blksize 1468
