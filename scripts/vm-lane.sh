#!/usr/bin/env bash
# The VM lane: boot Debian's pure cgroup v2 kernel (6.1, with AppArmor) under qemu and run
# the tests marked `vm` inside it, with this checkout and its .venv (the guest's root is the
# host's root, shared read-only over 9p under a tmpfs overlay). pytest's output and exit
# status come back through a second, writable 9p share. See docs/testing.md.
#
#   scripts/vm-lane.sh                 # pytest -m vm over tests/
#   scripts/vm-lane.sh tests/integration/test_vm_apparmor.py -k denied   # any pytest arguments
#
# Environment: VM_TIMEOUT (seconds for the whole guest, default 900), VM_MEMORY (MiB, 3072),
# VM_CPUS (2), VM_CACHE (initramfs cache, /var/cache/execdriver-vm), VM_KEEP=1 keeps the
# result directory, VM_INIT=systemd boots systemd as PID 1 (scripts/vm/stage2-systemd.sh:
# the job is a unit; for the systemd cgroup driver). Exit status: pytest's; 3 when the
# guest could not boot or did not report.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_MEMORY=${VM_MEMORY:-3072}
VM_CPUS=${VM_CPUS:-2}
VM_CACHE=${VM_CACHE:-/var/cache/execdriver-vm}
# what the guest loads from its initramfs (modinfo adds their dependencies, in order)
MODULES="9p 9pnet_virtio overlay virtio_pci"
die() { echo "vm-lane: $*" >&2; exit 3; }
case "${VM_INIT:-}" in
    "") STAGE2=stage2.sh ;;
    systemd) STAGE2=stage2-systemd.sh ;;
    *) die "VM_INIT=${VM_INIT}: only systemd (or unset) is known" ;;
esac

[ "$(id -u)" -eq 0 ] || die "needs root (apt, qemu's 9p shares of /)"
[ -x .venv/bin/python ] || ./scripts/setup.sh

# --- packages: qemu, the guest kernel, AppArmor's parser, what builds the initramfs -------
# linux-image-amd64 only installs files under /boot and /lib/modules (and initramfs-tools
# writes /boot/initrd.img-*); with no boot loader installed nothing changes how this host boots.
export DEBIAN_FRONTEND=noninteractive
missing=""
for p in qemu-system-x86 linux-image-amd64 apparmor busybox-static cpio kmod; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "vm-lane: installing$missing"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
for loader in grub-pc grub-efi-amd64 systemd-boot; do
    if dpkg-query -W -f='${Status}' "$loader" 2>/dev/null | grep -q "ok installed"; then
        echo "vm-lane: note: boot loader $loader is installed; the guest kernel package may be in its menu" >&2
    fi
done

# --- the guest kernel: the newest 6.x installed by linux-image-amd64 ---------------------
KVER=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -1)
[ -n "$KVER" ] && [ -d "/lib/modules/$KVER" ] || die "no Debian amd64 kernel in /boot and /lib/modules"
KERNEL=/boot/vmlinuz-$KVER

# --- the initramfs: busybox, the modules, scripts/vm/init; cached by content ---------------
# built by the qemu driver's builder (drivers/qemu: the same busybox + modules layout)
BUILDER=drivers/qemu/execdriver_qemu/initramfs.py
key=$( { echo "$KVER $MODULES"; cat scripts/vm/init /bin/busybox "$BUILDER"; } | sha256sum | cut -c1-16)
INITRD=$VM_CACHE/initramfs-$KVER-$key.cpio.gz
if [ ! -s "$INITRD" ]; then
    echo "vm-lane: building $INITRD"
    mkdir -p "$VM_CACHE"
    .venv/bin/python -m execdriver_qemu.initramfs --kernel "$KVER" --init scripts/vm/init \
        --modules "$MODULES" --out "$INITRD" || die "cannot build the initramfs"
fi

# --- the job and the result share ---------------------------------------------------------
RESULT=$(mktemp -d /tmp/execdriver-vm-result.XXXXXX)
[ "${VM_KEEP:-0}" = 1 ] || trap 'rm -rf "$RESULT"' EXIT
if [ $# -eq 0 ]; then
    set -- -m vm tests
fi
{
    echo "cd $(printf '%q' "$REPO")"
    echo "export EXECDRIVER_IN_VM=1 EXECDRIVER_VM_INIT=${VM_INIT:-} PYTHONDONTWRITEBYTECODE=1"
    printf 'exec .venv/bin/python -m pytest -p no:cacheprovider -q -rs'
    printf ' %q' "$@"
    echo
} >"$RESULT/job.sh"
# the job stops first, so its output and status still come back
echo $(( VM_TIMEOUT > 120 ? VM_TIMEOUT - 60 : VM_TIMEOUT / 2 )) >"$RESULT/time-limit"

# --- boot ---------------------------------------------------------------------------------
echo "vm-lane: booting $KERNEL under qemu (tcg, ${VM_CPUS} CPUs, ${VM_MEMORY} MiB); limit ${VM_TIMEOUT} s"
start=$(date +%s)
console=$RESULT/console.log
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -machine q35 -cpu max \
    -smp "$VM_CPUS" -m "$VM_MEMORY" -nodefaults -no-reboot -display none -monitor none \
    -serial "file:$console" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet apparmor=1 security=apparmor execdriver.stage2=$REPO/scripts/vm/$STAGE2" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$RESULT,mount_tag=result,security_model=none" \
    </dev/null &
qemu=$!
tail -n +1 -F "$console" --pid=$qemu 2>/dev/null &
wait $qemu
qemu_status=$?
set -e
sleep 0.5
elapsed=$(( $(date +%s) - start ))
if [ ! -s "$RESULT/status" ]; then
    if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
        why="the guest hit the ${VM_TIMEOUT} s limit"
    else
        why="qemu exited with status $qemu_status"
    fi
    echo "vm-lane: the guest did not report a test result ($why, after ${elapsed} s)." >&2
    echo "vm-lane: last console lines:" >&2
    tail -n 30 "$console" >&2 || true
    exit 3
fi
status=$(cat "$RESULT/status")
echo "vm-lane: pytest in the guest exited $status after ${elapsed} s (kernel $KVER)"
exit "$status"
