"""Rootfs helpers: a minimal busybox rootfs from the host's busybox-static,
and unpacking an exported image tarball safely."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import InvalidArgument, StepFailed

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path):
            out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically linked"
            if "dynamically" not in out:
                return path
    raise StepFailed("rootfs busybox", "no static busybox found (apt-get install busybox-static)")


def build_busybox(dest: str | os.PathLike[str]) -> Path:
    """Create a minimal rootfs at ``dest``: busybox, its applet links, /etc files."""
    busybox = find_busybox()
    root = Path(dest)
    if root.exists() and any(root.iterdir()):
        if not (root / "bin" / "busybox").exists():
            raise InvalidArgument(f"rootfs busybox dir={root}: exists and is not empty")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "home", "var/www", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/hostname").write_text("busybox\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    return root
