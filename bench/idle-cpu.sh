#!/bin/bash
# What an idle `lpmos serve --role=all` (fresh data dir, TLS on, loopback
# only) spends: after 30 s of start-up, its CPU seconds, bytes allocated
# and GC cycles over SECONDS, from its own /metrics. Several binaries run
# side by side, at the same time (BENCHMARKS.md, "Idle cost").
#
#   bash bench/idle-cpu.sh SECONDS BIN [BIN...]
set -euo pipefail
S=$1; shift
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
one() {
	local bin=$1 w cp pid a b
	w=$(mktemp -d /tmp/lpmos-idle-XXXX)
	cp=$(port)
	"$bin" serve --data-dir "$w/data" --listen-addr "127.0.0.1:$cp" --api-port "$(port)" \
		--etcd-client-url "https://127.0.0.1:$(port)" --etcd-peer-url "https://127.0.0.1:$(port)" \
		--advertise-ip 127.0.0.1 --dhcp-addr "127.0.0.1:$(port)" --pxe-addr "127.0.0.1:$(port)" \
		--tftp-addr "127.0.0.1:$(port)" --agent-tls off >"$w/log" 2>&1 &
	pid=$!
	sleep 30
	m() { curl -sk "https://127.0.0.1:$cp/metrics" | awk '/^go_gc_duration_seconds_count|^go_memstats_alloc_bytes_total|^process_cpu_seconds_total/{print $2}' | tr '\n' ' '; }
	a=$(m); sleep "$S"; b=$(m)
	python3 - "$bin" "$S" "$a" "$b" <<'PY'
import sys
bin, s, a, b = sys.argv[1], float(sys.argv[2]), list(map(float, sys.argv[3].split())), list(map(float, sys.argv[4].split()))
print(f"{bin}: over {s:.0f} s idle: {b[0]-a[0]:.0f} GCs, {(b[1]-a[1])/1e6:.1f} MB allocated, {b[2]-a[2]:.2f} s CPU ({(b[2]-a[2])/s*100:.2f}% of a core)")
PY
	kill -INT "$pid"; wait "$pid" || true; rm -rf "$w"
}
for bin in "$@"; do one "$bin" & done
wait
echo "load average at the end: $(cat /proc/loadavg)"
