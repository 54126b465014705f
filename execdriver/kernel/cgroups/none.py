"""No cgroup: a rootless container on a host that delegates none to its user.

An unprivileged user may not make cgroups outside a subtree delegated to it (a cgroup
v1 hierarchy is never delegated; on v2, systemd delegates ``user@UID.service``). As
runc does, such a container runs without one: ``create`` warns, asking for a limit is
an error (nothing could enforce it), pause and stats say why they cannot. The
container's processes are still found through its pid namespace (the init is pid 1
there: killing it ends them all).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...errors import StepFailed
from . import CgroupManager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ...config import Device, Resources


class NoCgroupManager(CgroupManager):
    version = 0

    def __init__(self, name: str, why: str = "") -> None:
        super().__init__(name)
        self.why = why or f"no cgroup is delegated to uid {os.geteuid()}"

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> NoCgroupManager:
        return cls(rec["name"], rec.get("why", ""))

    def record(self) -> dict[str, Any]:
        return {"version": 0, "name": self.name, "why": self.why}

    def create(self) -> None:
        pass

    def apply(self, resources: Resources, devices: Sequence[Device] = ()) -> None:
        asked = requested_limits(resources)
        if asked:
            raise StepFailed("cgroup", f"cannot apply {', '.join(asked)}: the container has "
                             f"no cgroup ({self.why})")

    def directories(self) -> list[str]:
        return []

    def procs_paths(self) -> list[str]:
        return []

    def _unable(self, what: str) -> StepFailed:
        return StepFailed(what, f"the container has no cgroup ({self.why})", name=self.name)

    def freeze(self) -> None:
        raise self._unable("pause")

    def thaw(self) -> None:
        raise self._unable("resume")

    def is_frozen(self) -> bool:
        return False

    def pids(self) -> list[int]:
        return []

    def oom_killed(self) -> bool:
        return False

    def stats(self) -> dict[str, int | None]:
        from . import STATS_KEYS
        return dict.fromkeys(STATS_KEYS)

    def exists(self) -> bool:
        return False

    def kill_all(self, sig: int) -> None:
        pass                            # the caller signals the init: its pid namespace ends

    def _remove_dirs(self) -> None:
        pass


def requested_limits(resources: Resources) -> list[str]:
    """What ``resources`` limits (only a cgroup could enforce it), by its spec names."""
    from ...config import Resources
    default = Resources()
    asked = []
    for part in ("memory", "cpu", "pids", "block_io"):
        mine, base = getattr(resources, part), getattr(default, part)
        for name in base.__dataclass_fields__:
            if getattr(mine, name) != getattr(base, name):
                asked.append(f"{part}.{name}")
    return asked
