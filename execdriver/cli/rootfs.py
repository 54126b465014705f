"""``rootfs busybox`` and ``rootfs import``, with a progress bar for imports on a tty."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO

from .output import human_size


class ProgressBar:
    """``importing [#####-----]  37%  45.2MiB / 120.0MiB`` redrawn in place on stderr.

    Redraws at most ten times a second; without a total (stdin) it shows bytes only.
    """

    WIDTH = 30

    def __init__(self, label: str = "importing", stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.last = 0.0
        self.drawn = False
        self.done: int = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            self.draw()

    def render(self) -> str:
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * self.WIDTH)
            return (f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {frac:4.0%}  "
                    f"{human_size(self.done)} / {human_size(self.total)}")
        return f"{self.label} {human_size(self.done)}"

    def draw(self) -> None:
        self.stream.write("\r" + self.render() + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


def cmd_busybox(args: argparse.Namespace) -> int:
    from execdriver.rootfs import build_busybox

    root = build_busybox(args.dir)
    print(f"busybox rootfs ready in {root}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from execdriver.rootfs import import_tarball

    bar = ProgressBar() if sys.stderr.isatty() else None
    try:
        report = import_tarball(args.tarball, args.dir, allow_devices=args.allow_devices,
                                progress=bar)
    finally:
        if bar is not None:
            bar.close()
    print(f"imported {report.members} entries ({human_size(report.bytes_read)} read) "
          f"into {report.dest}")
    return 0
