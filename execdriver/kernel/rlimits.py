"""Resource limits: checked in the parent, set in the forked container init.

``prepare`` maps names to RLIMIT_* numbers and refuses, before anything is
created, a hard limit the child could not set: above the runtime's current hard
limit without CAP_SYS_RESOURCE (the case on hosts that withhold it), or a
nofile limit above fs.nr_open. ``apply`` is one setrlimit per limit.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence

from ..errors import StepFailed
from .capabilities import has_effective
from .syscalls import LIBC, Syscalls

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from ..config import Rlimit

# Linux's RLIMIT_* numbers (x86_64 and aarch64); Python's resource module lacks some.
RLIMITS: dict[str, int] = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13,
    "rtprio": 14, "rttime": 15,
}
_NAMES = {v: k for k, v in RLIMITS.items()}
RLIM_INFINITY = resource.RLIM_INFINITY       # -1 in Python, 2**64-1 for the kernel


def _to_rlim(value: int) -> int:
    """Spec values >= 2**63 (e.g. 2**64-1) mean unlimited."""
    return RLIM_INFINITY if value >= 2**63 else value


def _fmt(value: int) -> str:
    return "unlimited" if value == RLIM_INFINITY else str(value)


def _above(a: int, b: int) -> bool:
    """a > b for rlimit values, where RLIM_INFINITY (-1) is the largest."""
    if a == RLIM_INFINITY:
        return b != RLIM_INFINITY
    return b != RLIM_INFINITY and a > b


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def prepare(rlimits: Sequence[Rlimit]) -> list[tuple[int, int, int]]:
    """Parent side: ``[(RLIMIT_*, soft, hard)]``; StepFailed for a limit we cannot set."""
    out = []
    can_raise = None
    for rl in rlimits:
        soft, hard = _to_rlim(rl.soft), _to_rlim(rl.hard)
        res = RLIMITS[rl.type]
        if rl.type == "nofile" and _above(hard, _nr_open()):
            raise StepFailed("rlimit", f"hard limit {_fmt(hard)} is above fs.nr_open "
                             f"({_nr_open()})", type=rl.type, hard=_fmt(hard))
        cur_hard = resource.getrlimit(res)[1]
        if _above(hard, cur_hard):
            if can_raise is None:
                can_raise = has_effective("CAP_SYS_RESOURCE")
            if not can_raise:
                raise StepFailed(
                    "rlimit",
                    f"hard limit {_fmt(hard)} is above the current hard limit {_fmt(cur_hard)}, "
                    "and raising a hard limit needs CAP_SYS_RESOURCE",
                    type=rl.type, hard=_fmt(hard))
        out.append((res, soft, hard))
    return out


def apply(prepared: list[tuple[int, int, int]], syscalls: Syscalls = LIBC) -> None:
    """Child side: set each limit (soft and hard at once)."""
    for res, soft, hard in prepared:
        try:
            syscalls.setrlimit(res, soft, hard)
        except (ValueError, OSError) as exc:
            raise StepFailed("rlimit", str(exc), type=_NAMES.get(res, res),
                             hard=_fmt(hard)) from None
