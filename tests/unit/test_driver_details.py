"""`execdriver drivers` says which container monitor the kernel-layer drivers use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def drivers(env: dict[str, str], *fmt: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "execdriver", "drivers", *fmt],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "EXECDRIVER_SERVER": "off", **env})


@pytest.mark.parametrize("built", [True, False])
def test_the_monitor_in_use_is_reported(tmp_path: Path, built: bool) -> None:
    waiter = tmp_path / "execdriver-waiter"
    if built:
        waiter.write_text("#!/bin/sh\n")
        waiter.chmod(0o755)
    r = drivers({"EXECDRIVER_WAITER": str(waiter) if built else ""}, "--format", "json")
    assert r.returncode == 0, r.stderr
    report = {d["name"]: d for d in json.loads(r.stdout)}
    for name in ("native", "chroot"):
        monitor = report[name]["details"]["monitor"]
        if built:
            assert monitor.startswith(f"C waiter {waiter} "), monitor
        else:
            assert monitor.startswith("Python ") and "execdriver.kernel.waiter" in monitor
    assert report["lxc"]["details"] == {}
    text = drivers({"EXECDRIVER_WAITER": ""}).stdout
    assert "  monitor: Python " in text
