"""docs/examples/supervisor.py, the orchestration example, runs as documented (root)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_native import leftovers

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "supervisor.py"


def supervisor(rootfs: Path, state: Path, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLE), "--rootfs", str(rootfs), "--state-root", str(state),
            "--backoff", "0.05", *args]


def test_it_restarts_a_failing_service_until_it_succeeds(rootfs: Path, state_root: Path) -> None:
    flaky = "flaky=sh -c 'echo x >> /flaky.count; test $(wc -l < /flaky.count) -ge 3'"
    r = subprocess.run(supervisor(rootfs, state_root, "--max-restarts", "3", "ok=true", flaky),
                       capture_output=True, text=True, timeout=90, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("flaky: failed: exit 1") == 2 and "flaky: done" in lines, lines
    assert "ok: done" in lines
    assert not [p for p in state_root.iterdir() if not p.name.startswith(".")]


def test_it_gives_up_after_the_restart_limit(rootfs: Path, state_root: Path) -> None:
    r = subprocess.run(supervisor(rootfs, state_root, "--max-restarts", "1", "bad=false"),
                       capture_output=True, text=True, timeout=90, check=False)
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1] == "bad: gave up after 1 restarts", r.stdout


def test_sigterm_stops_every_service_and_leaves_nothing(rootfs: Path, state_root: Path) -> None:
    proc = subprocess.Popen(supervisor(rootfs, state_root, "a=sleep 60", "b=sleep 60"),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = [proc.stdout.readline(), proc.stdout.readline()]
        assert all(": started (" in line for line in started), started
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while (left := leftovers(state_root, "a-0") + leftovers(state_root, "b-0")) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left and not [p for p in os.listdir(state_root) if not p.startswith(".")]
