"""AppArmor with the native driver. In the VM lane's guest (AppArmor enabled): a container
with no profile runs under execdriver-default (its /proc/self/attr/current says so) and a
write that profile denies fails with EACCES, where the same write under `unconfined`
succeeds; `--security-opt apparmor=NAME` on the CLI applies a profile the test loads. On a
host without AppArmor: an explicit profile is a one-line error, and a container without one
runs as before."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box
from test_cli_chroot import Cli, cli_env
from vm_host import needs_apparmor

from execdriver.driver import ExitStatus
from execdriver.errors import ExecDriverError
from execdriver.kernel import apparmor
from execdriver.spec import Spec

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

# /proc/sys/kernel/hostname is per UTS namespace, so root in the container may write it;
# execdriver-default denies writes under /proc/sys/kernel but for kernel/shm*.
HOSTNAME = ("cat /proc/self/attr/current; "
            "if echo box2 >/proc/sys/kernel/hostname; then echo write-ok; fi")


@pytest.fixture
def native(state_root: Path, busybox_rootfs: Path) -> Iterator[Box]:
    yield from helpers_native.box_fixture("native", state_root, busybox_rootfs)


def _hostname_spec(native: Box, profile: str | None) -> Spec:
    spec = native.spec(HOSTNAME)
    spec.readonly_paths = []     # /proc/sys is read-only by default: let AppArmor decide
    spec.process.apparmor_profile = profile
    return spec


@pytest.mark.vm
def test_default_profile_applies_and_denies_a_proc_sys_write(native: Box) -> None:
    needs_apparmor()
    status, out = native.run(_hostname_spec(native, None))
    assert status == ExitStatus(0), out
    assert out.splitlines()[0] == f"{apparmor.DEFAULT_PROFILE} (enforce)", out
    assert "Permission denied" in out and "write-ok" not in out, out
    assert apparmor.DEFAULT_PROFILE in apparmor.loaded_profiles()
    status, out = native.run(_hostname_spec(native, "unconfined"))
    assert status == ExitStatus(0), out
    assert out.splitlines() == ["unconfined", "write-ok"], out


@pytest.mark.vm
def test_cli_security_opt_applies_a_loaded_profile(tmp_path: Path, busybox_rootfs: Path) -> None:
    needs_apparmor()
    name = f"execdriver-test-{uuid.uuid4().hex[:8]}"
    text = (f"profile {name} flags=(attach_disconnected,mediate_deleted) {{\n"
            "  file,\n  capability,\n  network,\n  deny /tmp/denied w,\n}\n")
    subprocess.run(["apparmor_parser", "-r", "-K"], input=text, text=True, check=True)
    cli = Cli(tmp_path / "state", cli_env(tmp_path))
    try:
        r = cli("run", "--rootfs", busybox_rootfs, "--security-opt", f"apparmor={name}", "--",
                "/bin/sh", "-c", "cat /proc/self/attr/current; echo x >/tmp/ok && echo ok-written; "
                "echo x >/tmp/denied || echo denied-refused")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == f"{name} (enforce)", r.stdout
        assert "ok-written" in r.stdout and "denied-refused" in r.stdout, r.stdout
        assert "Permission denied" in r.stderr, r.stderr
    finally:
        subprocess.run(["apparmor_parser", "-R", "-K"], input=text, text=True, check=False)


def test_without_apparmor_an_explicit_profile_is_a_one_line_error(native: Box) -> None:
    if apparmor.enabled():
        pytest.skip("AppArmor is enabled here: the error is for hosts without it")
    spec = native.spec("true")
    spec.process.apparmor_profile = "myprofile"
    with pytest.raises(ExecDriverError) as info:
        native.run(spec)
    msg = str(info.value)
    assert "\n" not in msg and "AppArmor is not enabled" in msg and "profile=myprofile" in msg, msg
    # no profile asked for: nothing changes on such a host
    status, out = native.run(native.spec("echo ran"))
    assert status == ExitStatus(0) and out == "ran\n", out


def test_without_apparmor_the_cli_error_is_one_line(tmp_path: Path, busybox_rootfs: Path) -> None:
    if apparmor.enabled():
        pytest.skip("AppArmor is enabled here: the error is for hosts without it")
    cli = Cli(tmp_path / "state", cli_env(tmp_path))
    r = cli("run", "--rootfs", busybox_rootfs, "--security-opt", "apparmor=myprofile", "--", "true")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "AppArmor is not enabled" in lines[0], r.stderr
