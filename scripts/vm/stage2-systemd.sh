#!/bin/bash
# Stage 2 of the VM lane with systemd as PID 1 (VM_INIT=systemd; the systemd cgroup driver's
# tests): the same mounts as stage2.sh, then the lane's job as a unit of a target of its own
# (nothing else of the host's units starts), and systemd exec'd as the init. The job's
# script (job-systemd.sh) leaves pytest's output and status in the result share and powers
# the guest off.
. "$(dirname "$0")/common.sh"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
mount_run_tmp_result
# the units: /run/systemd/system is systemd's runtime unit directory
units=/run/systemd/system
mkdir -p "$units"
cat >"$units/execdriver-vm.target" <<UNIT
[Unit]
Description=execdriver VM lane
DefaultDependencies=no
Requires=execdriver-vm-job.service
After=execdriver-vm-job.service
UNIT
cat >"$units/execdriver-vm-job.service" <<UNIT
[Unit]
Description=execdriver VM lane job
DefaultDependencies=no
[Service]
Type=oneshot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
ExecStart=/bin/bash $repo/scripts/vm/job-systemd.sh
UNIT
say "user space up after $(cut -d' ' -f1 /proc/uptime) s; exec systemd"
umount /sys /proc
exec /lib/systemd/systemd --unit=execdriver-vm.target --log-target=console --log-level=warning
