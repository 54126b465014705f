"""The one atomic file write (a reader sees the old file or the new one, never a torn
one), and the one whole-file read with plain os calls (no io object: list and stats
read thousands of small files)."""

from __future__ import annotations

import os


def write_atomic(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o600, *,
                 fsync: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    ``mode`` is exact (the umask does not apply); ``fsync`` for records that must
    survive a power loss (the state of live processes need not: see state.py).
    """
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode() if isinstance(data, str) else data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def read_fd(fd: int) -> bytes:
    """Everything left to read from ``fd``."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_bytes(path: str) -> bytes:
    """The whole file (OSError as open and read raise it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)
