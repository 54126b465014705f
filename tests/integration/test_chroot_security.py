"""Checklist rows specific to the chroot driver: CAP_SYS_CHROOT (with which root escapes
any chroot) is refused before anything exists, and orphans are reaped. The chroot
break-outs (classic and fd-based, /proc/<pid>/root of a weak host process), the runtime's
helpers out of reach, a killed foreground runtime, signals and exit codes run for every
driver in test_security_drivers.py."""

from __future__ import annotations

import os
import time

import helpers_native
import pytest
from helpers_native import Box, assert_clean, new_id, zombies_of

from execdriver.driver import ExitStatus
from execdriver.errors import UnsupportedFeature

# fixtures shared through helpers_native
chroot = helpers_native.chroot

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def test_cap_sys_chroot_is_refused_before_anything_exists(chroot: Box) -> None:
    spec = chroot.spec("true")
    caps = spec.process.capabilities
    spec.process.capabilities = caps.with_changes(["CAP_SYS_CHROOT"], [])
    cid = new_id("chr")
    chroot.ids.append(cid)
    with pytest.raises(UnsupportedFeature) as err:
        chroot.run(spec, cid=cid)
    assert "CAP_SYS_CHROOT" in str(err.value)
    assert_clean(chroot.state_root, cid, chroot.rootfs)


# --- orphans --------------------------------------------------------------------------------

def test_orphans_are_reaped_while_running_and_after(chroot: Box) -> None:
    # the subshell exits at once: its sleep is orphaned to the monitor (a subreaper)
    cid, handle, _ = chroot.start(chroot.spec("(sleep 0.2 &); sleep 0.3 & exec sleep 2"),
                                  detach=False)
    monitor = chroot.driver.state.read(cid).monitor_pid
    init = chroot.driver.info(cid).pid
    assert init
    time.sleep(1)
    assert zombies_of(monitor) == [], "the monitor does not reap orphans"
    assert zombies_of(init)                     # sleep 0.3 is the init's: it never reaps
    assert handle.wait(20) == ExitStatus(0)
    assert zombies_of(monitor) == [] and zombies_of(os.getpid()) == []
