"""buildah (Debian's 1.28) builds an image whose RUN steps run through execdriver-oci
(`--runtime`), with its storage (vfs) in a temporary directory (root; issue #14)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

RUNTIME = Path(sys.executable).with_name("execdriver-oci")


@pytest.fixture
def buildah(tmp_path: Path) -> list[str]:
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (apt-get install buildah)")
    return ["buildah", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot"),
            "--storage-driver", "vfs"]


def logging_runtime(tmp_path: Path) -> tuple[Path, Path]:
    """execdriver-oci behind a script that logs each command line buildah gives it."""
    log, script = tmp_path / "runtime.log", tmp_path / "runtime"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {RUNTIME} "$@"\n')
    script.chmod(0o755)
    return script, log


def test_a_build_runs_its_steps_through_execdriver_oci(buildah: list[str], tmp_path: Path,
                                                       busybox_rootfs: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copytree(busybox_rootfs, ctx / "rootfs", symlinks=True)
    (ctx / "Containerfile").write_text(
        "FROM scratch\nCOPY rootfs/ /\n"
        "RUN echo built-by-$(cat /proc/1/comm) > /marker\n"
        'RUN ["/bin/sh", "-c", "echo exec-form > /second"]\n'
        'CMD ["/bin/cat", "/marker"]\n')
    runtime, log = logging_runtime(tmp_path)

    def b(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*buildah, *args], capture_output=True, text=True, timeout=240,
                           check=False, stdin=subprocess.DEVNULL)
        assert not check or r.returncode == 0, f"buildah {args}: {r.stderr[-2000:]}"
        return r
    try:
        b("bud", "--runtime", str(runtime), "-t", "edtest/built", str(ctx))
        verbs = [line.split()[0] for line in log.read_text().splitlines()]
        assert verbs.count("create") == 2 and verbs.count("start") == 2, verbs  # one per RUN
        c = b("from", "edtest/built").stdout.strip()
        out = b("run", "--runtime", str(runtime), c, "cat", "/marker", "/second").stdout
        assert out == "built-by-sh\nexec-form\n"
        # a failing step fails the build with its exit code
        (ctx / "Containerfile").write_text("FROM edtest/built\nRUN exit 3\n")
        r = b("bud", "--runtime", str(runtime), "-t", "edtest/broken", str(ctx), check=False)
        assert r.returncode != 0 and "exit status 3" in r.stderr, r.stderr[-2000:]
    finally:
        b("rm", "-a", check=False)
        b("rmi", "-a", "-f", check=False)
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()
