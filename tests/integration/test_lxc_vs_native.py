"""The LXC driver isolates like the native driver for what both support.

Each probe runs one spec under both drivers and compares what the container
saw (liblxc's own ``container=lxc`` variable aside).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from execdriver.driver import ExecDriver, ExitStatus, Status, Stdio
from execdriver.errors import ContainerNotFound
from execdriver.loader import load_driver
from execdriver.spec import Spec

pytestmark = pytest.mark.root


def _drivers(state_root: Path) -> dict[str, ExecDriver]:
    out = {}
    for name in ("lxc", "native"):
        try:
            d = load_driver(name, state_root=state_root / name)
        except Exception as exc:  # noqa: BLE001 - unavailable here: nothing to compare
            pytest.skip(f"driver {name}: {exc}")
        out[name] = d
    return out


@pytest.fixture
def drivers(state_root: Path):
    ds = _drivers(state_root)
    yield ds
    for d in ds.values():
        for cid in d.state.ids():
            try:
                d.terminate(cid)
            except ContainerNotFound:
                pass
    from execdriver_lxc import host
    host.remove_lock_dir(str(state_root / "lxc"), levels=2)


def run(d: ExecDriver, spec: Spec, cid: str = "cmp") -> tuple[ExitStatus, str]:
    with tempfile.TemporaryFile() as out:
        status = d.run(cid, spec, stdio=Stdio(stdout=out.fileno(), stderr=out.fileno()))
        out.seek(0)
        return status, out.read().decode()


def both(drivers, make: Callable[[ExecDriver], Spec]) -> dict[str, tuple[ExitStatus, str]]:
    return {name: run(d, make(d)) for name, d in drivers.items()}


def shell(script: str, **process) -> Callable[[ExecDriver], Spec]:
    def make(d: ExecDriver) -> Spec:
        data = d.default_spec(str(ROOTFS), ["/bin/sh", "-c", script]).model_dump()
        data["process"].update(process)
        if "hostname" in process:
            data["hostname"] = data["process"].pop("hostname")
        return Spec.model_validate(data)
    return make


ROOTFS: Path


@pytest.fixture(autouse=True)
def _rootfs(busybox_rootfs: Path) -> None:
    global ROOTFS
    ROOTFS = busybox_rootfs


def same(results: dict[str, tuple[ExitStatus, str]], normalize=lambda s: s) -> None:
    (s1, o1), (s2, o2) = results["lxc"], results["native"]
    assert s1 == s2, results
    assert normalize(o1) == normalize(o2), results


def test_hostname(drivers):
    same(both(drivers, shell("hostname", hostname="probe-host")))


def test_pid_1_is_the_command(drivers):
    same(both(drivers, shell("echo $$; cat /proc/1/comm")))


def test_env(drivers):
    def env(text: str) -> set[str]:
        return {line for line in text.splitlines()
                if not line.startswith(("container=", "PWD=", "SHLVL="))}
    same(both(drivers, shell("env", env={"PATH": "/bin:/usr/bin", "A": "1 2", "B": ""})), env)


def test_cwd(drivers):
    same(both(drivers, shell("pwd", cwd="/etc")))


def test_user(drivers):
    user = {"uid": 1000, "gid": 1001, "additional_gids": [20, 30]}
    caps = {"effective": [], "permitted": []}

    def make(d: ExecDriver) -> Spec:
        data = d.default_spec(str(ROOTFS), ["/bin/sh", "-c",
                                            "id -u; id -g; id -G; grep ^Cap /proc/self/status"]
                              ).model_dump()
        data["process"]["user"] = user
        data["process"]["capabilities"].update(caps)
        return Spec.model_validate(data)
    same(both(drivers, make))


def test_capabilities(drivers):
    script = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status"
    same(both(drivers, shell(script)))

    def dropped(d: ExecDriver) -> Spec:
        spec = shell(script)(d)
        spec.process.capabilities = spec.process.capabilities.with_changes(
            add=["NET_ADMIN", "SYS_PTRACE"], drop=["CHOWN", "SETUID"])
        return spec
    same(both(drivers, dropped))


def test_memory_limit(drivers):
    def make(d: ExecDriver) -> Spec:
        spec = shell("tail -c 90000000 /dev/zero")(d)
        spec.resources.memory.limit = 32 << 20
        spec.resources.memory.swap = 32 << 20
        return spec
    results = both(drivers, make)
    same(results)
    assert results["lxc"][0] == ExitStatus(code=137, signal=9, oom_killed=True)
    # and the limit seen from outside
    limits = {}
    for name, d in drivers.items():
        spec = shell("sleep 1000")(d)
        spec.resources.memory.limit = 48 << 20
        d.start("lim", spec, detach=True)
        deadline = time.monotonic() + 10
        while d.info("lim").status != Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        limits[name] = d.stats("lim").memory_limit
        d.terminate("lim")
    assert limits == {"lxc": 48 << 20, "native": 48 << 20}


def test_masked_and_readonly_paths(drivers):
    script = ("wc -c < /proc/keys; ls /sys/firmware | wc -l; "
              "(echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null; echo $?; "
              "(echo x > /proc/sysrq-trigger) 2>/dev/null; echo $?")
    same(both(drivers, shell(script)))


def test_network_none(drivers):
    same(both(drivers, shell("tail -n +3 /proc/net/dev | cut -d: -f1")))


def test_exit_and_kill(drivers):
    same(both(drivers, shell("exit 7")))
    for d in drivers.values():
        h = d.start("k", shell("sleep 1000")(d), detach=True)
        d.kill("k", 9)
        assert h.wait(10) == ExitStatus(code=137, signal=9)
        d.terminate("k")
    assert os.getuid() == 0
