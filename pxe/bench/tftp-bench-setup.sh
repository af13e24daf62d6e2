# tftp-bench-setup.sh is sourced by the TFTP benchmark scripts
# (tftp-vs-dnsmasq.sh, tftp-syscalls.sh), from the repository's root:
#
#   tftp_bench_setup NS-PREFIX TOOL...
#
# checks the tools, makes $tmp and the network namespace $ns (loopback up),
# removed on exit with the servers whose PIDs the script adds to $pids;
# builds this tree's pxe/bench/tftpd as $tmp/tftpd and, with BEFORE set,
# that git revision's as $tmp/before-tftpd; puts undionly.kpxe in
# $tmp/root ($size: its bytes).
#
#   tftp_bench_wait_all
#
# waits until every server in $servers answers a download of the URL the
# script's own url function gives for it (5 s each), or exits.

tftp_bench_cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}

tftp_bench_setup() {
	nsprefix=$1
	shift
	for cmd in "$@"; do
		command -v "$cmd" >/dev/null || { echo "missing $cmd" >&2; exit 1; }
	done
	tmp=$(mktemp -d)
	ns="$nsprefix-$$"
	pids=""
	trap tftp_bench_cleanup EXIT INT TERM
	go build -o "$tmp/tftpd" ./pxe/bench/tftpd
	if [ -n "$BEFORE" ]; then
		mkdir "$tmp/before-src"
		git archive "$BEFORE" | tar -x -C "$tmp/before-src"
		(cd "$tmp/before-src" && go build -o "$tmp/before-tftpd" ./pxe/bench/tftpd)
	fi
	mkdir "$tmp/root"
	cp pxe/ipxe/undionly.kpxe "$tmp/root/"
	chmod 755 "$tmp" "$tmp/root"
	chmod 644 "$tmp/root/undionly.kpxe"
	size=$(wc -c <"$tmp/root/undionly.kpxe")
	ip netns add "$ns"
	ip -n "$ns" link set lo up
}

tftp_bench_wait_all() {
	for s in $servers; do
		i=0
		until ip netns exec "$ns" curl -fsS --max-time 2 -o /dev/null "$(url "$s")" 2>/dev/null; do
			i=$((i + 1))
			[ "$i" -lt 50 ] || { echo "no answer from $s" >&2; exit 1; }
			sleep 0.1
		done
	done
}
