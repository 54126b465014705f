"""Capabilities: plan in the parent, apply in the forked container init.

``prepare`` turns the spec's capability lists into bit masks, reads the kernel's
last capability and builds the capset(2) structs, so the child's ``apply_user``
only make prctl/capset/set*id calls (no imports, no parsing).

Order in the child (as runc): drop the bounding set while still root (needs
CAP_SETPCAP), switch ids with PR_SET_KEEPCAPS so the permitted set survives,
then capset (effective/permitted/inheritable), then the ambient set.
Capabilities the running kernel does not know (number > cap_last_cap) are
left out of every mask, like runc does.
"""

from __future__ import annotations

import ctypes
import errno
import functools
from collections.abc import Iterable, Sequence

from ..errors import StepFailed
from . import syscalls as sc
from .capnames import CAP_NUMBERS, CAPABILITIES, normalize_capability
from .record import field, record
from .syscalls import LIBC, Syscalls

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

    from ..config import Capabilities

LINUX_CAPABILITY_VERSION_3 = 0x20080522
STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@record
class CapPlan:
    """Bit masks (bit N = capability number N) plus the prebuilt capset arguments."""

    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int
    last_cap: int
    drop_bounding: tuple[int, ...] = ()
    raise_ambient: tuple[int, ...] = ()
    _header: _CapHeader = field(default_factory=_CapHeader, repr=False, compare=False)
    _data: ctypes.Array = field(default_factory=_CapData * 2, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._header.version = LINUX_CAPABILITY_VERSION_3
        self._header.pid = 0
        for i in (0, 1):  # capset takes two 32-bit words per set
            shift = 32 * i
            self._data[i].effective = (self.effective >> shift) & 0xFFFFFFFF
            self._data[i].permitted = (self.permitted >> shift) & 0xFFFFFFFF
            self._data[i].inheritable = (self.inheritable >> shift) & 0xFFFFFFFF

    def __reduce__(self) -> tuple[Any, ...]:
        # (the fork server gets it pickled: the structs are built again there)
        return (CapPlan, (self.bounding, self.effective, self.permitted, self.inheritable,
                          self.ambient, self.last_cap, self.drop_bounding, self.raise_ambient))


@functools.lru_cache(maxsize=1)
def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def names_to_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[normalize_capability(name)]
    return mask


def mask_to_names(mask: int) -> list[str]:
    """Capability names for the bits of ``mask`` (unknown bits as ``CAP_<n>``)."""
    out = []
    for n in range(mask.bit_length()):
        if mask >> n & 1:
            out.append(CAPABILITIES[n] if n < len(CAPABILITIES) else f"CAP_{n}")
    return out


SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def prepare(caps: Capabilities, kernel_last_cap: int | None = None,
            in_userns: bool = False) -> CapPlan:
    """Parent side: masks, the bounding caps to drop, and the capset structs.
    ``in_userns``: the process will be in a user namespace of the container's."""
    return prepare_sets({k: getattr(caps, k) for k in SETS}, kernel_last_cap, in_userns)


def prepare_sets(sets: dict[str, Sequence[str]], kernel_last_cap: int | None = None,
                 in_userns: bool = False) -> CapPlan:
    """prepare() from the five sets by name (SETS), each a list of capability names."""
    last = last_cap() if kernel_last_cap is None else kernel_last_cap
    known = (1 << (last + 1)) - 1
    masks = {k: names_to_mask(sets[k]) & known for k in SETS}
    # capset(2) refuses inheritable bits outside the bounding set: say so now.
    outside = masks["inheritable"] & ~masks["bounding"]
    if outside:
        raise StepFailed("capabilities", "inheritable capabilities not in the bounding set: "
                         + ", ".join(mask_to_names(outside)))
    # Nobody can give what it does not hold (capset would fail in the init, where for a
    # created container nobody hears it): say so now, before anything is made.
    wanted = masks["effective"] | masks["permitted"] | masks["inheritable"] | masks["ambient"]
    # Entering a user namespace (unshare or setns) gives a full bounding set in it,
    # whatever ours is (a rootless caller's may be empty).
    missing = 0 if in_userns else wanted & ~_held_bounding()
    if missing:
        raise StepFailed("capabilities", "not in this runtime's own bounding set, so it cannot "
                         "grant them: " + ", ".join(mask_to_names(missing)))
    plan = CapPlan(
        bounding=masks["bounding"], effective=masks["effective"], permitted=masks["permitted"],
        inheritable=masks["inheritable"], ambient=masks["ambient"], last_cap=last,
        drop_bounding=tuple(n for n in range(last + 1) if not masks["bounding"] >> n & 1),
        raise_ambient=tuple(n for n in range(last + 1) if masks["ambient"] >> n & 1))
    return plan


# --- child side: only prctl/capset/set*id below ------------------------------

def apply_user(uid: int, gid: int, additional_gids: list[int] | tuple[int, ...],
               plan: CapPlan, syscalls: Syscalls = LIBC) -> None:
    """Child side: switch to uid/gid keeping the planned capabilities.

    Drop the bounding set while root (CAP_SETPCAP); PR_SET_KEEPCAPS keeps the
    permitted set across the id change; groups, then gid, then uid (after
    setresuid we could no longer change groups or gid); capset restores the
    effective/permitted/inheritable sets the switch emptied; then the ambient set.
    """
    for cap in plan.drop_bounding:
        syscalls.prctl(sc.PR_CAPBSET_DROP, cap)
    syscalls.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        syscalls.setgroups(additional_gids)
    except PermissionError:
        # A user namespace joined by path may deny setgroups (its maker wrote "deny" to
        # /proc/PID/setgroups): as runc, no supplementary groups then, unless asked for.
        if additional_gids:
            raise PermissionError(errno.EPERM, "setgroups denied in this user namespace "
                                  "(process.user.additional_gids cannot be set)") from None
    syscalls.setresgid(gid, gid, gid)
    syscalls.setresuid(uid, uid, uid)
    syscalls.capset(plan._header, plan._data)
    syscalls.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in plan.raise_ambient:
        syscalls.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
    syscalls.prctl(sc.PR_SET_KEEPCAPS, 0)


# --- inspection ---------------------------------------------------------------

def _held_bounding() -> int:
    try:
        return read_status_caps("self")["CapBnd"]
    except (OSError, KeyError):
        return -1               # (no /proc: let capset decide)


def read_status_caps(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                out[key] = int(value.strip(), 16)
    return out


def has_effective(name: str, unknown: bool = False) -> bool:
    """Whether this process holds capability ``name`` in its effective set;
    ``unknown`` when /proc cannot tell."""
    try:
        return bool(read_status_caps()["CapEff"] >> CAP_NUMBERS[name] & 1)
    except (OSError, KeyError, ValueError):
        return unknown


# --- for drivers (execdriver.host.apply_capabilities) --------------------------

def apply(*, bounding: list[str] | tuple[str, ...], effective: list[str] | tuple[str, ...],
          permitted: list[str] | tuple[str, ...], inheritable: list[str] | tuple[str, ...] = (),
          ambient: list[str] | tuple[str, ...] = (), uid: int = 0, gid: int = 0,
          additional_gids: list[int] | tuple[int, ...] = (),
          syscalls: Syscalls = LIBC) -> None:
    """Give the calling process exactly these capability sets, running as uid/gid.

    Names as in the spec (``CAP_CHOWN`` or ``chown``). The bounding set is dropped
    first (while still root), then the ids switch (keeping the permitted set), then
    effective/permitted/inheritable are set and the ambient set raised. The caller
    must be root with every capability it asks for; call it last before exec, in a
    forked single-threaded child (capabilities are per thread). Raises
    ``StepFailed("capabilities", ...)`` for sets that cannot go together, OSError
    from the kernel otherwise.
    """
    # Not config.Capabilities: a driver calls this in a child that may already be in the
    # container's root, where nothing more can be imported.
    plan = prepare_sets({"bounding": bounding, "effective": effective, "permitted": permitted,
                         "inheritable": inheritable, "ambient": ambient})
    apply_user(uid, gid, tuple(additional_gids), plan, syscalls)
