"""Security-checklist rows only the native driver has a test for here.

Every row that applies to a driver through its spec runs against each driver (native,
chroot, lxc) in test_security_drivers.py; raw-syscall seccomp checks live in
test_security_kernel.py. What remains is the runtime SIGKILLed at any point of create,
with the native driver's own timing (the hardening suite's crash injection covers every
driver line by line)."""

from __future__ import annotations

import subprocess
import sys
import time

import helpers_native
import pytest
from helpers_native import Box, assert_clean, cgroup_procs, new_id, wait_until

import execdriver.loader
from execdriver.driver import ExitStatus

# fixtures shared through helpers_native
native = helpers_native.native

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


# --- the runtime is SIGKILLed during create -------------------------------------------------------

CREATE = (
    "import execdriver.loader, sys\n"
    "d = execdriver.loader.load_driver('native', state_root=sys.argv[1])\n"
    "spec = d.default_spec(sys.argv[2], ['/bin/sh', '-c', 'sleep 1000 & exec sleep 1000'])\n"
    "spec.resources.pids.limit = 100\n"
    "print('go', flush=True)\n"
    "d.run(sys.argv[3], spec)\n"
)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4])
def test_runtime_killed_during_create_then_terminate_cleans_up(native: Box, delay: float) -> None:
    cid = new_id("kill")
    native.ids.append(cid)
    proc = subprocess.Popen([sys.executable, "-c", CREATE, str(native.state_root),
                             str(native.rootfs), cid], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"go\n"
    time.sleep(delay)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    other = execdriver.loader.load_driver("native", state_root=native.state_root)
    if other.state.exists(cid):
        other.terminate(cid)
    assert_clean(native.state_root, cid, native.rootfs)
    wait_until(lambda: not cgroup_procs(cid), timeout=5, what="no process left")
    status, out = native.run(native.spec("echo reused"), cid=cid)
    assert status == ExitStatus(0) and out == "reused\n"
