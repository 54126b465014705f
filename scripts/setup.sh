#!/usr/bin/env bash
# Install everything execdriver needs on a fresh Debian 12 machine (as root):
# Debian packages, a venv at .venv with execdriver (editable) and its test deps,
# and a busybox rootfs at demo-rootfs/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PKGS="busybox-static runc lxc lxc-dev liblxc1 pkg-config gcc python3-dev nftables iproute2 podman conmon containerd docker.io uidmap systemd-container"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
# (an older set-up linked the commands into .venv/libexec: pip replaces files, not links)
for cmd in .venv/bin/execdriver .venv/bin/execdriver-oci; do [ ! -L "$cmd" ] || rm -f "$cmd"; done
.venv/bin/pip install -q --disable-pip-version-check -e '.[lxc,test,dev,bench]' -e tests/example_driver -e drivers/nspawn
# (the package build compiled the C container monitor and the execdriver/execdriver-oci front)
[ -x demo-rootfs/bin/busybox ] || .venv/bin/execdriver rootfs busybox demo-rootfs
# CRIU >= 4.1 for checkpoint/restore (found, or built once and cached; not fatal without)
./scripts/build-criu.sh >/dev/null || echo "setup: no usable CRIU: checkpoint/restore will be unavailable" >&2
