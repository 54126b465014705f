"""User-namespace id maps, for root and for an unprivileged (rootless) caller.

Root writes ``/proc/PID/uid_map`` and ``gid_map`` itself. An unprivileged process may
write only one line mapping its own euid (and, once ``setgroups`` is denied, its own
egid); every other map goes through the setuid helpers newuidmap/newgidmap (Debian
``uidmap``), which check the ranges against /etc/subuid and /etc/subgid, as podman,
runc and LXC do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import StepFailed

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from .syscalls import Syscalls

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
HELPERS = ("/usr/bin/newuidmap", "/usr/bin/newgidmap")


def subordinate_ranges(path: str, uid: int, name: str | None) -> list[tuple[int, int]]:
    """The (start, count) ranges ``path`` (/etc/subuid, /etc/subgid) grants to the user
    ``uid`` (by number or by ``name``), in file order."""
    ranges: list[tuple[int, int]] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return ranges
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (str(uid), name):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            ranges.append((start, count))
    return ranges


def default_maps(uid: int, gid: int, name: str | None) -> tuple[list[tuple[int, int, int]],
                                                                list[tuple[int, int, int]]]:
    """The (container, host, size) maps of a rootless container when the spec gives none:
    container root is the caller; container ids from 1 up are the caller's first
    subordinate range, when it has one and the helpers are installed (else only root)."""
    uids, gids = [(0, uid, 1)], [(0, gid, 1)]
    if all(os.access(h, os.X_OK) for h in HELPERS):
        sub_u = subordinate_ranges(SUBUID, uid, name)
        sub_g = subordinate_ranges(SUBGID, uid, name)
        if sub_u and sub_g:
            uids.append((1, sub_u[0][0], sub_u[0][1]))
            gids.append((1, sub_g[0][0], sub_g[0][1]))
    return uids, gids


def parse(text: str) -> list[tuple[int, int, int]]:
    """The lines of a map as written to /proc/PID/uid_map."""
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in text.splitlines()
                                                        if line.strip())]


def write_id_maps(pid: int, uid_map: str, gid_map: str, syscalls: Syscalls) -> None:
    """Map the user namespace of ``pid`` (it waits until we have)."""
    try:
        if os.geteuid() == 0:
            syscalls.write_file(f"/proc/{pid}/uid_map", uid_map)
            syscalls.write_file(f"/proc/{pid}/gid_map", gid_map)
            return
        _write_unprivileged(pid, parse(uid_map), parse(gid_map), syscalls)
    except OSError as exc:
        raise StepFailed("idmap", os.strerror(exc.errno or 0), pid=pid) from None


def _write_unprivileged(pid: int, uids: list[tuple[int, int, int]],
                        gids: list[tuple[int, int, int]], syscalls: Syscalls) -> None:
    euid, egid = os.geteuid(), os.getegid()
    own = (len(uids) == 1 and uids[0][1:] == (euid, 1)
           and len(gids) == 1 and gids[0][1:] == (egid, 1))
    if own:
        # The one map the kernel lets us write: our own ids, setgroups denied first.
        syscalls.write_file(f"/proc/{pid}/uid_map", _text(uids))
        syscalls.write_file(f"/proc/{pid}/setgroups", "deny")
        syscalls.write_file(f"/proc/{pid}/gid_map", _text(gids))
        return
    for helper, maps in zip(HELPERS, (uids, gids), strict=True):
        _run_helper(helper, pid, maps)


def _run_helper(helper: str, pid: int, maps: Sequence[tuple[int, int, int]]) -> None:
    name = os.path.basename(helper)
    if not os.access(helper, os.X_OK):
        raise StepFailed("idmap", f"{name} is not installed (Debian: apt install uidmap); "
                         "without it a rootless container maps only the caller's own ids",
                         pid=pid)
    import subprocess
    argv = [helper, str(pid)] + [str(n) for m in maps for n in m]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepFailed("idmap", f"{name}: {exc}", pid=pid) from None
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        raise StepFailed("idmap", f"{why} ({name} maps only what "
                         f"{SUBUID if name == 'newuidmap' else SUBGID} grants this user)",
                         pid=pid)


def _text(maps: Sequence[tuple[int, int, int]]) -> str:
    return "".join(f"{a} {b} {c}\n" for a, b, c in maps)
