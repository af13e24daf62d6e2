#!/usr/bin/env bash
# Build the lpmos .deb from goreleaser.yaml's nfpms entry, install it with
# dpkg, check its files, user and systemd unit, run the packaged service as
# the packaged user with the packaged environment and capabilities (in a
# private network namespace, without systemd) until it is healthy, then purge
# it and check nothing is left. Root, Debian; .ci/run calls it, and it runs
# the same way by hand: bash deploy/ci-package.sh
#
# The binary is built with the same `go build` as e2e/pxe.sh so CI reuses its
# build cache; nfpm is goreleaser's packager (the version goreleaser v2.15.1
# uses), fed the nfpms entry of goreleaser.yaml translated to nfpm's format.
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."

NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# Highest `systemd-analyze security` exposure accepted for lpmos.service
# (0 = locked down, 10 = unsafe); the measured score is printed.
MAX_EXPOSURE=${LPMOS_PKG_MAX_EXPOSURE:-2.0}

die() { echo "ci-package: FAIL: $*" >&2; exit 1; }
say() { echo "ci-package: $*"; }

# Phase 2 (re-executed inside `unshare --net`): run the installed service.
# $2 = capabilities to give (comma list, or "none"), $3 = expected state
# of the DHCP/TFTP services ("running" or "failed"), $4 = --dhcp-mode.
if [ "${1:-}" = --in-netns ]; then
	caps=$2 want=$3 mode=$4
	ip link set lo up
	# A provisioning interface with a default route, as on a real host: the
	# packaged defaults (proxyDHCP on :67/:4011, TFTP :69, advertise IP from
	# the default route) then work unchanged.
	ip link add lpmos0 type veth peer name lpmos0p
	ip link set lpmos0p up
	ip addr add 10.213.0.1/24 dev lpmos0
	ip link set lpmos0 up
	ip route add default dev lpmos0
	set -a
	# shellcheck disable=SC1091
	. /etc/lpmos/lpmos.env
	set +a
	export LPMOS_DHCP_IFACE=lpmos0 # SO_BINDTODEVICE is part of what is measured
	export LPMOS_DHCP_MODE=$mode LPMOS_DHCP_RANGE_START=10.213.0.100 LPMOS_DHCP_RANGE_END=10.213.0.200
	if [ "$caps" = none ]; then
		capargs=(--inh-caps=-all --ambient-caps=-all --bounding-set=-all)
	else
		c=$(tr , '\n' <<<"$caps" | sed 's/^/+/' | paste -sd,)
		capargs=(--inh-caps="$c" --ambient-caps="$c" --bounding-set=-all,"$c")
	fi
	log=$(mktemp /tmp/lpmos-pkg-serve.XXXXXX)
	# The unit's settings: User/Group lpmos, NoNewPrivileges, the ambient
	# capabilities, LimitNOFILE, UMask, data dir from the env file.
	(
		ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" # LimitNOFILE=65536
		umask 0077
		cd /var/lib/lpmos
		exec setpriv --reuid=lpmos --regid=lpmos --init-groups --no-new-privs "${capargs[@]}" \
			/usr/bin/lpmos serve --role=all
	) >"$log" 2>&1 &
	pid=$!
	trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
	ok= body=
	for _ in $(seq 1 120); do
		sleep 0.5
		kill -0 "$pid" 2>/dev/null || { cat "$log"; die "lpmos serve exited (caps=$caps)"; }
		[ -f /var/lib/lpmos/pki/ca.crt ] || continue
		body=$(curl -s --max-time 2 --cacert /var/lib/lpmos/pki/ca.crt https://127.0.0.1:8080/api/v1/health || true)
		dhcp=$(jq -r '.services[]? | select(.name|test("/dhcp")) | .state' <<<"$body" 2>/dev/null || true)
		tftp=$(jq -r '.services[]? | select(.name|endswith("/tftp")) | .state' <<<"$body" 2>/dev/null || true)
		if [ "$dhcp" = "$want" ] && [ "$tftp" = "$want" ]; then ok=1; break; fi
	done
	[ -n "$ok" ] || { cat "$log"; echo "$body"; die "caps=$caps: DHCP/TFTP not $want"; }
	if [ "$want" = running ]; then
		[ "$(jq -r .status <<<"$body")" = ok ] || { echo "$body"; die "health is not ok"; }
		curl -sf --max-time 2 http://127.0.0.1:8081/healthz | jq -e '.status == "ok"' >/dev/null ||
			die "agent port /healthz is not ok"
		owner=$(stat -c %U /var/lib/lpmos/admin.token)
		[ "$owner" = lpmos ] || die "data written as $owner, not lpmos"
		pgrep -u lpmos -x lpmos >/dev/null || die "lpmos does not run as user lpmos"
		if [ "$mode" = proxy ]; then
			# lpmos backup from the packaged service, restored into a new dir.
			b=$(mktemp -d /tmp/lpmos-pkg-backup.XXXXXX)
			/usr/bin/lpmos backup "$b/lpmos.backup" --data-dir /var/lib/lpmos >/dev/null || { rm -rf "$b"; die "lpmos backup of the packaged service failed"; }
			/usr/bin/lpmos restore "$b/lpmos.backup" --data-dir "$b/restored" >/dev/null || { rm -rf "$b"; die "lpmos restore failed"; }
			[ -d "$b/restored/etcd/member/wal" ] && [ -f "$b/restored/pki/ca.crt" ] || { rm -rf "$b"; die "restored data dir incomplete"; }
			rm -rf "$b"
			say "lpmos backup of the packaged service and lpmos restore: ok"
		fi
	fi
	say "caps=$caps dhcp-mode=$mode: DHCP and TFTP ${want}; health: $(jq -c '[.status, ([.services[] | .name + "=" + .state])]' <<<"$body")"
	kill -TERM "$pid"
	wait "$pid" || die "lpmos serve did not stop cleanly on SIGTERM"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (dpkg -i, a network namespace)"
for t in dpkg-deb python3 jq curl setpriv unshare systemd-analyze; do
	command -v "$t" >/dev/null || die "$t is missing (apt-get install systemd jq curl python3-yaml util-linux)"
done
python3 -c 'import yaml' 2>/dev/null || die "python3-yaml is missing (apt-get install python3-yaml)"
if dpkg -s lpmos >/dev/null 2>&1 || [ -e /var/lib/lpmos ] || [ -e /etc/lpmos ]; then
	die "lpmos is already installed here (or /var/lib/lpmos, /etc/lpmos exist): this test purges it; remove it first"
fi

W=$(mktemp -d /tmp/lpmos-pkg.XXXXXX)
cleanup() {
	if dpkg -s lpmos >/dev/null 2>&1; then dpkg --purge lpmos >/dev/null 2>&1 || true; fi
	rm -rf "$W"
}
trap cleanup EXIT
t0=$(date +%s)

arch=$(go env GOARCH)
version="0.0.0+ci.$(git rev-parse --short HEAD 2>/dev/null || echo local)"
say "go build ($arch, $version)"
go build -ldflags "-X main.version=$version" -o "$W/lpmos" .

say "nfpm config from goreleaser.yaml"
python3 - "$W" "$arch" "$version" <<'EOF'
import sys, yaml
w, arch, version = sys.argv[1:]
g = yaml.safe_load(open("goreleaser.yaml"))
(n,) = [x for x in g["nfpms"] if x["id"] == "lpmos"]
cfg = {k: v for k, v in n.items() if k not in ("id", "package_name", "ids", "formats", "bindir", "file_name_template")}
cfg.update(name=n["package_name"], arch=arch, platform="linux", version=version)
cfg["contents"] = [{"src": w + "/lpmos", "dst": n["bindir"] + "/lpmos", "file_info": {"mode": 0o755}}] + n["contents"]
yaml.safe_dump(cfg, open(w + "/nfpm.yaml", "w"), sort_keys=False)
EOF
say "nfpm package (deb)"
go run "$NFPM" package --config "$W/nfpm.yaml" --packager deb --target "$W/" >/dev/null
deb=$(ls "$W"/*.deb)
say "built $(basename "$deb") ($(du -h "$deb" | cut -f1)) in $(($(date +%s) - t0))s"

files=(/usr/bin/lpmos /usr/lib/systemd/system/lpmos.service /usr/lib/sysusers.d/lpmos.conf
	/usr/lib/tmpfiles.d/lpmos.conf /etc/lpmos/lpmos.env /usr/share/doc/lpmos/copyright
	/usr/share/doc/lpmos/COPYING.ipxe)
listing=$(dpkg-deb -c "$deb")
for f in "${files[@]}"; do grep -q " \.$f\$" <<<"$listing" || die "$f is not in the package"; done
dpkg-deb -f "$deb" Package Version Architecture | sed 's/^/ci-package:   /'

say "dpkg -i"
dpkg -i "$deb" >/dev/null
for f in "${files[@]}"; do [ -e "$f" ] || die "$f is missing after dpkg -i"; done
dpkg -s lpmos | grep -q '^Conffiles:' || die "/etc/lpmos/lpmos.env is not a conffile"
/usr/bin/lpmos version | grep -qF "$version" || die "/usr/bin/lpmos version does not say $version"
getent passwd lpmos | grep -q ':/var/lib/lpmos:/usr/sbin/nologin$' || die "user lpmos missing or wrong: $(getent passwd lpmos)"
[ "$(stat -c '%U:%G %a' /var/lib/lpmos)" = "lpmos:lpmos 700" ] || die "/var/lib/lpmos is $(stat -c '%U:%G %a' /var/lib/lpmos)"
[ "$(stat -c '%a' /etc/lpmos/lpmos.env)" = 640 ] || die "/etc/lpmos/lpmos.env mode $(stat -c %a /etc/lpmos/lpmos.env)"

say "systemd-analyze verify"
# verify warns (exit 0) about things of the CI machine itself; fail on
# anything it says about lpmos.service.
out=$(systemd-analyze verify /usr/lib/systemd/system/lpmos.service 2>&1) || { echo "$out"; die "systemd-analyze verify failed"; }
if grep -i 'lpmos' <<<"$out"; then die "systemd-analyze verify complains about lpmos.service"; fi
exposure=$(systemd-analyze security --offline=yes --no-pager /usr/lib/systemd/system/lpmos.service 2>&1 |
	sed -n 's/.*Overall exposure level for lpmos.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || die "systemd-analyze security printed no exposure level"
say "systemd-analyze security: exposure $exposure (at most $MAX_EXPOSURE)"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' || die "exposure $exposure > $MAX_EXPOSURE"

say "run the packaged service (no capabilities: DHCP/TFTP must fail to bind)"
unshare --net -- bash "$self" --in-netns none failed proxy
say "run the packaged service (the unit's capabilities; proxyDHCP, then full DHCP)"
caps=$(sed -n 's/^AmbientCapabilities=//p' /usr/lib/systemd/system/lpmos.service | tr ' ' , | tr 'A-Z' 'a-z' | sed 's/cap_//g')
unshare --net -- bash "$self" --in-netns "$caps" running proxy
unshare --net -- bash "$self" --in-netns "$caps" running full

say "dpkg --purge"
dpkg --purge lpmos >/dev/null
for f in "${files[@]}" /var/lib/lpmos /etc/lpmos /usr/share/doc/lpmos; do [ ! -e "$f" ] || die "$f is left after purge"; done
! getent passwd lpmos >/dev/null || die "user lpmos is left after purge"
! getent group lpmos >/dev/null || die "group lpmos is left after purge"
say "ok in $(($(date +%s) - t0))s"
