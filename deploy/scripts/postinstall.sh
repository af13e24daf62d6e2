#!/bin/sh
# lpmos package postinst (deb: configure [old-version]; rpm: 1 install, 2 upgrade).
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers lpmos.conf
else
	getent group lpmos >/dev/null || groupadd --system lpmos
	getent passwd lpmos >/dev/null || useradd --system --gid lpmos --home-dir /var/lib/lpmos \
		--shell /usr/sbin/nologin --comment "lpmos provisioning" lpmos
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create lpmos.conf
else
	install -d -m 0700 -o lpmos -g lpmos /var/lib/lpmos
	install -d -m 0755 /etc/lpmos
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	upgrade=
	case "$1" in
	configure) [ -n "$2" ] && upgrade=1 ;;
	2) upgrade=1 ;;
	esac
	# An upgrade restarts a running service on the new binary; a first
	# install does not start it: configure /etc/lpmos/lpmos.env first, then
	# systemctl enable --now lpmos
	if [ -n "$upgrade" ]; then systemctl try-restart lpmos.service || true; fi
fi
exit 0
