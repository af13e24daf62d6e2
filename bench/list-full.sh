#!/bin/bash
# Times GET /api/v1/tasks on an idle lpmos serving a copy of a data dir
# (BENCHMARKS.md, "full list of 10,000 installed tasks"): the first full
# list after the start (every task marshalled), five more (the kept JSON),
# and three first pages of 50, as curl's time to the last byte.
#
#   go run ./bench/fleet -n 10000 -duration 5s -keep     # a data dir of 10,000 installed tasks
#   bash bench/list-full.sh BIN DATA_DIR                 # SETTLE=20: seconds idle before the lists
set -euo pipefail
BIN=$1; SRC=$2; W=$(mktemp -d /tmp/lpmos-list-XXXX)
trap 'rm -rf "$W"' EXIT
cp -a "$SRC" "$W/data"; rm -f "$W/data/lpmos.lock"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
CP=$(port)
"$BIN" serve --data-dir "$W/data" --listen-addr "127.0.0.1:$CP" --api-port "$(port)" \
	--etcd-client-url "https://127.0.0.1:$(port)" --etcd-peer-url "https://127.0.0.1:$(port)" \
	--advertise-ip 127.0.0.1 --dhcp-addr "127.0.0.1:$(port)" --pxe-addr "127.0.0.1:$(port)" \
	--tftp-addr "127.0.0.1:$(port)" --agent-tls off --tls=off >"$W/lpmos.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$CP/healthz" >/dev/null && break; sleep 0.5; done
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
