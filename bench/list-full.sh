#!/bin/bash
# Times GET /api/v1/tasks on an idle lpmos serving a copy of a data dir
# (BENCHMARKS.md, "full list of 10,000 installed tasks"): the first full
# list after the start (every task marshalled), five more (the kept JSON),
# and three first pages of 50, as curl's time to the last byte.
#
#   go run ./bench/fleet -n 10000 -duration 5s -keep     # a data dir of 10,000 installed tasks
#   bash bench/list-full.sh BIN DATA_DIR                 # SETTLE=20: seconds idle before the lists
#
# Until session 10 the readiness wait polled /healthz on the control-plane
# port, which answers 404 there: every run waited the loop's full 150 s
# before SETTLE, so earlier "first list after a start" figures are after
# ~170 s idle (SETTLE=170 reproduces them).
set -euo pipefail
BIN=$1; SRC=$2; W=$(mktemp -d /tmp/lpmos-list-XXXX)
trap 'rm -rf "$W"' EXIT
cp -a "$SRC" "$W/data"; rm -f "$W/data/lpmos.lock"
# Eight distinct free ports, all bound at once so no two are the same.
read -r CP AP EC EP DP PP TP _ < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
"$BIN" serve --data-dir "$W/data" --listen-addr "127.0.0.1:$CP" --api-port "$AP" \
	--etcd-client-url "https://127.0.0.1:$EC" --etcd-peer-url "https://127.0.0.1:$EP" \
	--advertise-ip 127.0.0.1 --dhcp-addr "127.0.0.1:$DP" --pxe-addr "127.0.0.1:$PP" \
	--tftp-addr "127.0.0.1:$TP" --agent-tls off --tls=off >"$W/lpmos.log" 2>&1 &
PID=$!
# Ready when this lpmos answers; a port another process took first (a 404
# from someone else, or lpmos exiting on "address in use") fails at once.
for i in $(seq 1 300); do
	if ! kill -0 "$PID" 2>/dev/null; then echo "lpmos exited:" >&2; tail -5 "$W/lpmos.log" >&2; exit 1; fi
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CP/api/v1/health" || true)
	[ "$code" = 200 ] && break
	if [ "$code" != 000 ] && [ "$code" != 503 ]; then echo "/api/v1/health on port $CP answered $code: not this lpmos" >&2; kill -INT "$PID"; exit 1; fi
	[ "$i" = 300 ] && { echo "lpmos not ready after 150 s" >&2; kill -INT "$PID"; exit 1; }
	sleep 0.5
done
TOK=$(cat "$W/data/admin.token")
sleep "${SETTLE:-20}"
echo "load average: $(cat /proc/loadavg)"
for _ in 1 2 3 4 5 6; do
	curl -s -o /dev/null -H "Authorization: Bearer $TOK" -w "full list: %{http_code} %{size_download} B, %{time_total} s (first byte %{time_starttransfer} s)\n" "http://127.0.0.1:$CP/api/v1/tasks"
done
for _ in 1 2 3; do
	curl -s -o /dev/null -H "Authorization: Bearer $TOK" -w "first page of 50: %{http_code} %{time_total} s\n" "http://127.0.0.1:$CP/api/v1/tasks?limit=50"
done
echo "load average: $(cat /proc/loadavg); lpmos $(grep VmRSS /proc/$PID/status)"
kill -INT "$PID"; wait "$PID" || true
