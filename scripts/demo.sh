#!/usr/bin/env bash
# Set everything up (Debian packages, .venv, a busybox rootfs) and run a real
# container with the native driver. No network needed. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "+ .venv/bin/execdriver drivers"
.venv/bin/execdriver drivers
echo "+ .venv/bin/execdriver run --driver native --rootfs demo-rootfs --hostname demo -- /bin/sh -c '...'"
.venv/bin/execdriver run --driver native --rootfs demo-rootfs --hostname demo --memory 64M -- \
    /bin/sh -c 'echo "hello from $(hostname), pid $$ in a container"; grep -E "^(NoNewPrivs|Seccomp):" /proc/self/status'
