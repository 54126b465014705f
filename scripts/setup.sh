#!/usr/bin/env bash
# Install everything execdriver needs on a fresh Debian 12 machine (as root):
# Debian packages, a venv at .venv with execdriver (editable) and its test deps,
# and a busybox rootfs at demo-rootfs/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PKGS="busybox-static runc lxc lxc-dev liblxc1 pkg-config gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user python3-dev nftables iproute2 podman buildah conmon containerd docker.io zsh uidmap systemd-container"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
fi
# the qemu driver (drivers/qemu) and the VM lane: qemu and a guest kernel, without their
# recommends (linux-image-amd64 only adds files under /boot and /lib/modules)
VM_PKGS="qemu-system-x86 linux-image-amd64 kmod cpio"
missing=""
for p in $VM_PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
# (an older set-up linked the commands into .venv/libexec: pip replaces files, not links)
for cmd in .venv/bin/execdriver .venv/bin/execdriver-oci; do [ ! -L "$cmd" ] || rm -f "$cmd"; done
.venv/bin/pip install -q --disable-pip-version-check -e '.[lxc,test,dev,bench]' -e tests/example_driver -e drivers/nspawn -e drivers/qemu
# (the package build compiled the C container monitor and the execdriver/execdriver-oci front)
# (EXECDRIVER_SERVER=manual: the set-up starts no resident server)
[ -x demo-rootfs/bin/busybox ] || EXECDRIVER_SERVER=manual .venv/bin/execdriver rootfs busybox demo-rootfs
# CRIU >= 4.1 for checkpoint/restore (found, or built once and cached; not fatal without)
./scripts/build-criu.sh >/dev/null || echo "setup: no usable CRIU: checkpoint/restore will be unavailable" >&2
