#!/usr/bin/env bash
# Install everything execdriver needs on a fresh Debian 12 machine (as root):
# Debian packages, a venv at .venv with execdriver (editable) and its test deps,
# and a busybox rootfs at demo-rootfs/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PKGS="busybox-static runc lxc lxc-dev liblxc1 pkg-config gcc python3-dev nftables iproute2 podman conmon containerd uidmap"
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
.venv/bin/pip install -q --disable-pip-version-check -e '.[lxc,test,dev,bench]' -e tests/example_driver
.venv/bin/python -m execdriver.kernel.waiter >/dev/null  # the C container monitor (optional, saves memory)
.venv/bin/python -m execdriver.cli.client_build >/dev/null  # the compiled execdriver/execdriver-oci front (optional, starts faster)
[ -x demo-rootfs/bin/busybox ] || .venv/bin/execdriver rootfs busybox demo-rootfs
