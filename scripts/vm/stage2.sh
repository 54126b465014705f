#!/bin/bash
# Stage 2 of the VM lane, PID 1 in the guest after switch_root (the root is the host's,
# read-only over 9p, under a tmpfs overlay). Mounts what a pure cgroup v2 host has, runs
# the job vm-lane.sh wrote into the writable result share, leaves pytest's output and exit
# status there, and powers the guest off.
. "$(dirname "$0")/common.sh"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || say "cannot mount cgroup2"
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
mount_run_tmp_result
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
hostname execdriver-vm
ip link set lo up 2>/dev/null || true
say "user space up after $(cut -d' ' -f1 /proc/uptime) s; cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
say "AppArmor: $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo absent)"
run_job
off
