"""Support for the CLI tests: run ``execdriver`` as a subprocess, and a test driver.

The ``hostproc`` driver is a real third-party driver, registered the way any
other is (a dist-info with an ``execdriver.drivers`` entry point, found through
PYTHONPATH): it runs the container's command as a plain host process, with no
isolation at all. That is enough to test, without root, everything the CLI does
around a driver: exit codes, signal forwarding, detached containers and every
verb on them. Other test modules import the fixtures from here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HOSTPROC_SOURCE = r'''
"""Test driver: the container's command runs as a plain host process (no isolation)."""
import os
import signal
import subprocess
import time

from execdriver.driver import ContainerInfo, ExecDriver, ExitStatus, Handle, Stats, Status
from execdriver.errors import ContainerNotFound, InvalidState
from execdriver.spec import ALL_FEATURES
from execdriver.state import pid_start_time


def _status(rc):
    return ExitStatus(code=128 - rc, signal=-rc) if rc < 0 else ExitStatus(code=rc)


class HostProcDriver(ExecDriver):
    name = "hostproc"
    features = frozenset(ALL_FEATURES)
    description = "CLI test driver: host processes, no isolation"

    def start(self, cid, spec, *, stdio=None, detach=False):
        self.state.create(cid, self.name, spec)
        out = subprocess.DEVNULL if detach else None
        proc = subprocess.Popen(spec.process.args, env=dict(spec.process.env),
                                cwd=spec.root.path, start_new_session=True,
                                stdin=subprocess.DEVNULL if detach else None,
                                stdout=out, stderr=out)

        def running(st):
            st.pid, st.pid_start, st.status = proc.pid, pid_start_time(proc.pid), "running"
        self.state.update(cid, running)

        def waiter(timeout):
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            status = _status(rc)

            def stopped(st):
                st.status, st.exit = "stopped", status.to_dict()
            self.state.update(cid, stopped)
            return status
        return Handle(cid, proc.pid, waiter)

    def _live(self, cid):
        st = self.state.read(cid)
        if not st.alive():
            raise InvalidState(f"container {cid} is not running", container_id=cid)
        return st

    def kill(self, cid, signal=signal.SIGTERM, all=False):
        st = self._live(cid)
        (os.killpg if all else os.kill)(st.pid, signal)

    def pause(self, cid):
        if cid.startswith("boom"):
            raise RuntimeError("hostproc pause exploded")
        st = self._live(cid)
        os.killpg(st.pid, signal.SIGSTOP)
        self.state.update(cid, lambda s: setattr(s, "status", "paused"))

    def unpause(self, cid):
        st = self._live(cid)
        os.killpg(st.pid, signal.SIGCONT)
        self.state.update(cid, lambda s: setattr(s, "status", "running"))

    def info(self, cid):
        st = self.state.read(cid)
        alive = st.alive()
        status = st.status
        if status in ("running", "paused") and not alive:
            status = "stopped"
        return ContainerInfo(id=cid, driver=self.name, status=Status(status),
                             pid=st.pid if alive else None, created=st.created,
                             rootfs=st.rootfs, annotations=dict(st.annotations),
                             exit_status=ExitStatus.from_dict(st.exit) if st.exit else None)

    def terminate(self, cid):
        try:
            st = self.state.read(cid)
        except ContainerNotFound:
            return
        if st.alive():
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.killpg(st.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while st.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.state.remove(cid)

    def exec_start(self, cid, process, *, stdio=None, detach=True):
        self._live(cid)
        proc = subprocess.Popen(process.args, env=dict(process.env), start_new_session=True)
        return Handle(cid, proc.pid, lambda t: _status(proc.wait(t)))

    def stats(self, cid):
        st = self._live(cid)
        with open(f"/proc/{st.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        with open(f"/proc/{st.pid}/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return Stats(id=cid, cpu_usage_ns=ticks * 10**9 // os.sysconf("SC_CLK_TCK"),
                     memory_usage=rss, pids_current=1)

    def pids(self, cid):
        return [self._live(cid).pid]
'''

DIST_METADATA = "Metadata-Version: 2.1\nName: execdriver-hostproc\nVersion: 1.0\n"
ENTRY_POINTS = "[execdriver.drivers]\nhostproc = execdriver_hostproc:HostProcDriver\n"


@pytest.fixture(scope="session")
def hostproc_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that, on PYTHONPATH, installs the hostproc driver."""
    site = tmp_path_factory.mktemp("site")
    (site / "execdriver_hostproc.py").write_text(HOSTPROC_SOURCE)
    dist = site / "execdriver_hostproc-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(DIST_METADATA)
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


class Cli:
    """Runs ``python -m execdriver --root ROOT ...`` with the hostproc driver installed."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "execdriver", "--root", str(self.root), *map(str, args)]

    def __call__(self, *args: Any, input: str | bytes | None = None, timeout: float = 60,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        text = not isinstance(input, bytes)
        return subprocess.run(self.argv(*args), input=input, capture_output=True, text=text,
                              env=self.env, timeout=timeout, cwd=cwd, check=False)

    def popen(self, *args: Any, **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.argv(*args), env=self.env, text=True, **kw)

    def ok(self, *args: Any, **kw: Any) -> str:
        r = self(*args, **kw)
        assert r.returncode == 0, (args, r.returncode, r.stderr)
        return r.stdout

    def json(self, *args: Any) -> Any:
        return json.loads(self.ok(*args, "--format", "json"))

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.json("info", cid)
            if info["status"] == status or time.monotonic() > deadline:
                assert info["status"] == status, info
                return info
            time.sleep(0.05)


def cli_env(tmp: Path, site: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # stevedore's entry-point cache
    return env


@pytest.fixture
def cli(tmp_path: Path, hostproc_site: Path) -> Cli:
    root = tmp_path / "state"
    return Cli(root, cli_env(tmp_path, hostproc_site))


def assert_one_error_line(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 125, exactly one ``execdriver: `` line on stderr, no traceback."""
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("execdriver: "), lines
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- the support's own tests ------------------------------------------------

def test_hostproc_driver_is_discovered(cli: Cli) -> None:
    reports = {r["name"]: r for r in cli.json("drivers")}
    assert reports["hostproc"]["loaded"] and reports["hostproc"]["available"]
    assert "exec" in reports["hostproc"]["features"]


def test_hostproc_foreground_run_cleans_up(cli: Cli, tmp_path: Path) -> None:
    r = cli("run", "--driver", "hostproc", "--rootfs", tmp_path, "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    assert not any(cli.root.iterdir())


def test_sigterm_to_detached_hostproc_container(cli: Cli, tmp_path: Path) -> None:
    cid = cli.ok("run", "-d", "--driver", "hostproc", "--rootfs", tmp_path, "--",
                 "/bin/sleep", "60").strip()
    info = cli.wait_status(cid, "running")
    os.kill(info["pid"], signal.SIGTERM)
    cli.wait_status(cid, "stopped")
    cli.ok("rm", cid)
