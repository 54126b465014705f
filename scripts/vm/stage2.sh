#!/bin/bash
# Stage 2 of the VM lane, PID 1 in the guest after switch_root (the root is the host's,
# read-only over 9p, under a tmpfs overlay). Mounts what a pure cgroup v2 host has, runs
# the job vm-lane.sh wrote into the writable result share, leaves pytest's output and exit
# status there, and powers the guest off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "vm-stage2: $*" >/dev/console; }
off() { sync; echo o >/proc/sysrq-trigger; sleep 60; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || say "cannot mount cgroup2"
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
# The checkout may live under /tmp or /run (a CI clone): keep it visible through the
# fresh tmpfs mounts there by moving a bind of it back on top.
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
case "$repo" in /tmp/*|/run/*) mkdir -p /.checkout && mount --bind "$repo" /.checkout ;; esac
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
if [ -d /.checkout ]; then
    mkdir -p "$repo" && mount --move /.checkout "$repo" || say "cannot keep the checkout at $repo"
fi
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
hostname execdriver-vm
ip link set lo up 2>/dev/null || true
mkdir -p /run/vm-result
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 result /run/vm-result; then
    say "cannot mount the result share (mount_tag result)"
    off
fi
say "user space up after $(cut -d' ' -f1 /proc/uptime) s; cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
say "AppArmor: $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo absent)"
# the job: a bash script written by the host (cd to the checkout, run pytest)
limit=$(cat /run/vm-result/time-limit 2>/dev/null || echo 780)
timeout -k 10 "$limit" bash /run/vm-result/job.sh >/run/vm-result/output.txt 2>&1 </dev/null &
job=$!
# mirror the output to the console while it runs, so the host shows progress
tail -n +1 -f /run/vm-result/output.txt --pid=$job >/dev/console 2>&1 &
wait $job
status=$?
sleep 1
echo "$status" >/run/vm-result/status
say "job exit status $status"
off
