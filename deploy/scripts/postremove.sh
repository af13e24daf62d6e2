#!/bin/sh
# lpmos package postrm (deb: remove|purge|upgrade ...; rpm: 0 erase, 1 upgrade).
# Only a deb purge deletes the data (etcd member, PKI, admin token, images) and
# the lpmos user; remove, rpm -e and upgrades keep them.
set -e
case "$1" in
purge)
	rm -rf /var/lib/lpmos /etc/lpmos
	if getent passwd lpmos >/dev/null; then userdel lpmos >/dev/null 2>&1 || true; fi
	if getent group lpmos >/dev/null; then groupdel lpmos >/dev/null 2>&1 || true; fi
	;;
esac
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
