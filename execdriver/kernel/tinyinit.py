"""The tiny init of ``run --init`` (tinyinit.c): where it is, and building it on first use.

docker's --init bind-mounts a static tini; execdriver builds tinyinit.c with the
system C compiler, statically linked (the container's rootfs may have no libc),
once per version of the source, next to the C waiter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from ..errors import StepFailed

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tinyinit.c")
#: where the container sees it (docker's place: /dev is the container's own tmpfs,
#: so a read-only rootfs is no obstacle)
CONTAINER_PATH = "/dev/init"


def default_path() -> str:
    """The binary for this version of the source (its hash is in the name)."""
    from . import waiter
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return os.path.join(os.path.dirname(waiter.default_path()), f"execdriver-init.{digest}")


def find_or_build() -> str:
    """The init binary (EXECDRIVER_INIT overrides), built now if missing; StepFailed
    saying what is missing when it cannot be built here."""
    path = os.environ.get("EXECDRIVER_INIT") or default_path()
    if os.access(path, os.X_OK):
        return path
    if os.environ.get("EXECDRIVER_INIT"):
        raise StepFailed("init", f"EXECDRIVER_INIT={path}: not an executable file")
    return build(path)


def build(dest: str) -> str:
    from . import waiter
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise StepFailed("init", "building the init needs a C compiler (apt-get install gcc)")
    try:
        return waiter.compile_c(SOURCE, dest, "-static", "-s", quiet=True)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace")
        if "cannot find -lc" in detail or "crt1.o" in detail:
            cause = "no static C library (apt-get install libc6-dev)"
        else:
            lines = [ln for ln in detail.splitlines() if ln.strip()]
            cause = f"cc failed: {lines[-1] if lines else exc}"
        raise StepFailed("init", f"building {os.path.basename(SOURCE)} failed: {cause}") from None
    except OSError as exc:
        raise StepFailed("init", f"building the init into {dest} failed: {exc}") from None
