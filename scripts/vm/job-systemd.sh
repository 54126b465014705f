#!/bin/bash
# The VM lane's job under systemd (stage2-systemd.sh's unit): what stage2.sh does after its
# mounts, then a forced power-off (no unit is stopped: nothing is left to save).
SAY_AS=vm-job
. "$(dirname "$0")/common.sh"
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o newinstance,ptmxmode=0666,gid=5,mode=620 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
hostname execdriver-vm
ip link set lo up 2>/dev/null || true
say "systemd: $(systemctl is-system-running 2>&1); PID 1: $(cat /proc/1/comm); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
run_job
sync
systemctl poweroff --force --force
