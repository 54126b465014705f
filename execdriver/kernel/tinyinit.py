"""The tiny init of ``run --init`` (tinyinit.c): where it is, and how to build it.

docker's --init bind-mounts a static tini; execdriver's package build compiles
tinyinit.c with the system C compiler, statically linked (the container's rootfs
may have no libc), into the package beside it (setup.py's build_py), as it does
the C waiter. Nothing is built at run time: a package is not written to once
installed, so pip uninstall leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import StepFailed

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tinyinit.c")
NAME = "execdriver-init"
#: where the container sees it (docker's place: /dev is the container's own tmpfs,
#: so a read-only rootfs is no obstacle)
CONTAINER_PATH = "/dev/init"


def default_path() -> str:
    return os.path.join(os.path.dirname(SOURCE), NAME)


def find() -> str:
    """The init binary (EXECDRIVER_INIT overrides); StepFailed saying why it is missing."""
    path = os.environ.get("EXECDRIVER_INIT")
    if path:
        if not os.access(path, os.X_OK):
            raise StepFailed("init", f"EXECDRIVER_INIT={path}: not an executable file")
        return path
    path = default_path()
    if not os.access(path, os.X_OK):
        raise StepFailed("init", f"{path} was not built with the package (its build needs a C "
                                 "compiler and a static libc: apt-get install gcc libc6-dev, "
                                 "then reinstall execdriver)")
    return path


def build(dest: str | None = None) -> str:
    """Compile tinyinit.c statically into ``dest`` (default: beside it); StepFailed
    saying what is missing when it cannot be built here."""
    from . import waiter
    dest = dest or default_path()
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
