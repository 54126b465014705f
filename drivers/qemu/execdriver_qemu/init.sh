#!/bin/busybox sh
# /init of the qemu driver's initramfs (execdriver_qemu.initramfs builds it around this):
# load the virtio, 9p and virtio-console modules in dependency order, mount the container's
# root (9p, mount_tag rootfs) at /newroot with proc, sys and a small /dev inside it, name the
# virtio-serial ports /dev/port-<name>, set the host name, then hand over to execdriver-guest
# (PID 1 from then on), which runs the container's process. /execdriver/init.conf (shell
# assignments, written per container) sets READONLY and HOSTNAME and defines guest_mounts; execdriver.probe=1 on the
# kernel command line only reports that the guest booted (the acceleration probe).
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
    echo "execdriver-init: $*" >/dev/ttyS0
    [ -e /dev/port-control ] && echo "error $*" >/dev/port-control
    reboot -f
    sleep 60
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
case " $(cat /proc/cmdline) " in
    *" execdriver.probe=1 "*) echo "execdriver-probe-ok" >/dev/ttyS0; reboot -f ;;
esac
while read -r mod; do
    insmod "/modules/$mod.ko" || fail "insmod $mod failed"
done </modules/order
READONLY=0
HOSTNAME=execdriver
guest_mounts() { :; }
. /execdriver/init.conf
for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] && ln -sf "/dev/${p##*/}" "/dev/port-$(cat "$p/name")"
done
i=0
while [ ! -e /dev/port-control ] && [ $i -lt 100 ]; do
    sleep 0.05
    i=$((i + 1))
    for p in /sys/class/virtio-ports/*; do
        [ -e "$p/name" ] && ln -sf "/dev/${p##*/}" "/dev/port-$(cat "$p/name")"
    done
done
opts=trans=virtio,version=9p2000.L,msize=512000,cache=none
[ "$READONLY" = 1 ] && opts=$opts,ro
mkdir -p /newroot
mount -t 9p -o "$opts" rootfs /newroot || fail "cannot mount the container's root over 9p"
# the spec's mounts (kernel file systems only: init.conf's guest_mounts calls mnt for each)
mnt() {     # TYPE SOURCE OPTIONS DESTINATION
    [ -d "/newroot$4" ] || mkdir -p "/newroot$4" 2>/dev/null
    [ -d "/newroot$4" ] || fail "mount $4: no such directory in the container's root"
    mount -t "$1" -o "$3" "$2" "/newroot$4" || fail "mount $4 ($1) failed"
    [ "$4" = /dev ] && devnodes
}
devnodes() {
    for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
        set -- $node
        mknod -m 666 "/newroot/dev/$1" c "$2" "$3"
    done
    ln -s /proc/self/fd /newroot/dev/fd
    ln -s /proc/self/fd/0 /newroot/dev/stdin
    ln -s /proc/self/fd/1 /newroot/dev/stdout
    ln -s /proc/self/fd/2 /newroot/dev/stderr
    mkdir -p /newroot/dev/pts /newroot/dev/shm
    ln -s pts/ptmx /newroot/dev/ptmx
}
guest_mounts
ip link set lo up 2>/dev/null
hostname "$HOSTNAME"
exec /bin/execdriver-guest
