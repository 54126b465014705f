"""Helpers for the driver conformance suite (usable from any driver's own tests)."""

from __future__ import annotations

import fnmatch
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ..driver import ExecDriver
from ..spec import Spec, features_used, validate_spec
from ..state import ID_RE, pid_running

T = TypeVar("T")


def new_id(tag: str = "conf") -> str:
    """A container id unique across parallel runs (drivers may name host objects after it)."""
    return f"{tag}-{uuid.uuid4().hex[:12]}"


class Output:
    """A temporary file to hand to a container as its stdout or stderr."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="execdriver-conformance-")  # noqa: SIM115
        self.fd = self._file.fileno()

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def text(self) -> str:
        return os.pread(self.fd, self.size(), 0).decode(errors="replace")

    def close(self) -> None:
        self._file.close()


class Input(Output):
    """A temporary file holding ``data``, to hand to a container as its stdin."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        os.write(self.fd, data)
        os.lseek(self.fd, 0, os.SEEK_SET)


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def parse_env(text: str) -> dict[str, str]:
    """``env`` output as a dict (values must not contain newlines)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def missing_features(driver: ExecDriver, features: Iterable[str]) -> list[str]:
    return sorted(set(features) - set(driver.features))


def requires(driver: ExecDriver, *features: str) -> None:
    """Skip the current test unless the driver declares every one of ``features``."""
    missing = missing_features(driver, features)
    if missing:
        pytest.skip(f"driver {driver.name} does not declare {', '.join(missing)}")


def make_spec(driver: ExecDriver, rootfs: str | os.PathLike[str], args: list[str], *,
              env: dict[str, str] | None = None, cwd: str | None = None,
              user: dict[str, Any] | None = None, hostname: str | None = None,
              stdin: bool | None = None) -> Spec:
    """``driver.default_spec(rootfs, args)`` with a few tweaks.

    ``env`` is merged into the default environment; ``user`` is a dict of
    spec.User fields. A tweak needing a feature the driver does not declare
    skips the test (user: process.user; hostname: hostname + namespaces.uts).
    """
    base = driver.default_spec(str(rootfs), list(args))
    undeclared = missing_features(driver, features_used(base))
    if undeclared:
        pytest.fail(f"driver {driver.name}: default_spec() asks for undeclared features: "
                    f"{', '.join(undeclared)}")
    needed: set[str] = set()
    d = base.model_dump()
    if env is not None:
        d["process"]["env"] = {**d["process"]["env"], **env}
    if cwd is not None:
        d["process"]["cwd"] = cwd
    if stdin is not None:
        d["process"]["stdin"] = stdin
    if user is not None:
        needed.add("process.user")
        d["process"]["user"] = dict(user)
    if hostname is not None:
        needed |= {"hostname", "namespaces.uts"}
        if "uts" not in base.namespace_types():
            d["namespaces"].append({"type": "uts", "path": None})
        d["hostname"] = hostname
    requires(driver, *needed)
    return validate_spec(d)


def leftovers(state_root: Path, allowed: Iterable[str] = ()) -> list[str]:
    """What remains under a state root: container dirs and files (empty dirs are fine).

    ``allowed`` holds glob patterns (relative to the root) of files a driver
    shares between containers and may keep.
    """
    patterns = list(allowed)
    found: list[str] = []

    def note(path: str) -> None:
        rel = os.path.relpath(path, state_root)
        if not any(fnmatch.fnmatch(rel, pat) for pat in patterns):
            found.append(rel)
    if not state_root.is_dir():
        return found
    for top in sorted(os.listdir(state_root)):
        path = state_root / top
        if not path.is_dir() or path.is_symlink():
            note(str(path))
        elif ID_RE.match(top):
            found.append(f"{top}/ (a container's state dir)")
        else:
            for dirpath, dirnames, filenames in os.walk(path):
                for name in filenames + [n for n in dirnames
                                         if os.path.islink(os.path.join(dirpath, n))]:
                    note(os.path.join(dirpath, name))
    return found


def alive(pids: Iterable[int]) -> list[int]:
    return [p for p in pids if pid_running(p)]
