"""Shared helpers of the hardening tests: what a container may leave behind, and
running the ``execdriver`` CLI as a separate process (as a user or an orchestrator would).

A container is traced by a *marker*: the tests put ``EDHARD=<marker>`` in the
environment of the container's process and of the runtime process that creates
it, so every process of a container (runtime forks, monitor, init, children)
can be found by scanning ``/proc/*/environ``, even when its cgroup is gone.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cgroup_leftovers as leftovers_cg

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
EXECDRIVER = str(VENV_BIN / "execdriver") if (VENV_BIN / "execdriver").exists() else None
CLI = [EXECDRIVER] if EXECDRIVER else [sys.executable, "-m", "execdriver.cli.main"]
MARK_VAR = "EDHARD"


def new_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def wait_for(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something true (returned) or ``timeout`` passes
    (then its last value is returned, so the caller's assert shows what was wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- what a container may leave behind --------------------------------------------

def cgroup_dirs(cid: str) -> list[str]:
    """Cgroup directories named after ``cid``, LXC's included."""
    return leftovers_cg.cgroup_dirs(cid, lxc=True)


def cgroup_pids(cid: str) -> list[int]:
    return leftovers_cg.cgroup_pids(cid, lxc=True)


def marked_pids(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds EDHARD=<marker>."""
    needle = f"{MARK_VAR}={marker}".encode()
    out = []
    me = os.getpid()
    for env in glob.glob("/proc/[0-9]*/environ"):
        pid = int(env.split("/")[2])
        if pid == me:
            continue
        try:
            with open(env, "rb") as f:
                data = f.read()
            if needle not in data.split(b"\0"):
                continue
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X"):
            out.append(pid)
    return sorted(out)


def host_mounts(*needles: str) -> list[str]:
    """Lines of the test's own mountinfo that mention any of ``needles``."""
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f.read().splitlines() if any(n in ln for n in needles)]


def leftovers(state_root: str | Path, cid: str, marker: str | None = None,
              rootfs: str | Path | None = None, hidden: bool = True) -> dict[str, list[Any]]:
    """Everything of ``cid`` still there (empty lists when clean). ``hidden``: count the
    hidden directories of a create/remove in flight (``.new-<id>-*``, ``.gone-<id>-*``)."""
    out: dict[str, list[Any]] = {
        "cgroups": cgroup_dirs(cid),
        "state": [str(p) for p in [Path(state_root) / cid] if p.exists()]
                 + (sorted(glob.glob(f"{state_root}/.*-{cid}-*")) if hidden else []),
        "mounts": host_mounts(*([cid] + ([str(rootfs)] if rootfs else []))),
        "processes": marked_pids(marker) if marker else [],
        "lxc": [p for p in (f"/var/lib/lxc/{cid}",) if os.path.exists(p)],
    }
    return out


def assert_clean(state_root: str | Path, cid: str, marker: str | None = None,
                 rootfs: str | Path | None = None, timeout: float = 5.0, what: str = "",
                 hidden: bool = True) -> None:
    """Nothing of ``cid`` left; processes and cgroups may take a moment to go."""
    def problems() -> dict[str, list[Any]]:
        return {k: v for k, v in leftovers(state_root, cid, marker, rootfs, hidden).items() if v}
    left = problems()
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = problems()
    assert not left, f"{what or cid}: left behind: {left}"


def kill_marked(marker: str) -> None:
    """Last-resort cleanup for a failed test: SIGKILL what carries our marker."""
    for pid in marked_pids(marker):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


# --- the CLI as a separate process ---------------------------------------------------

def cli(root: str | Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    """``execdriver --root ROOT ARGS...`` to completion (stdout/stderr captured)."""
    full_env = dict(os.environ, **(env or {}))
    r = subprocess.run([*CLI, "--root", str(root), *args], check=False, capture_output=True,
                       text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"execdriver {' '.join(args)} -> {r.returncode}: {r.stderr}")
    return r


def cli_popen(root: str | Path, *args: str, env: dict[str, str] | None = None,
              **popen: Any) -> subprocess.Popen[str]:
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    popen.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([*CLI, "--root", str(root), *args], text=True,
                            env=dict(os.environ, **(env or {})), **popen)


def assert_one_line_error(r: subprocess.CompletedProcess[str], what: str) -> str:
    """A failed CLI call must be exit 125 with one ``execdriver: ...`` line, no traceback."""
    err = r.stderr.strip()
    assert r.returncode == 125, f"{what}: exit {r.returncode}, stderr {err!r}"
    assert "Traceback" not in r.stderr and "internal error" not in err, f"{what}: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("execdriver: "), f"{what}: {err!r}"
    return lines[0]
