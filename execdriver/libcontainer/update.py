"""Changing a live container's resource limits (docker update, runc update).

One operation for every front end: the native and chroot drivers
(``ExecDriver.update_resources``) and ``execdriver-oci update`` call
:func:`update_resources`; the flag tables turn docker/runc flags into changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, InvalidState, StepFailed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .container import Container

#: flag (argparse dest) -> (spec.resources section, field): runc's and docker's update flags
FLAG_FIELDS = {"memory": ("memory", "limit"), "memory_reservation": ("memory", "reservation"),
               "memory_swap": ("memory", "swap"), "cpu_shares": ("cpu", "shares"),
               "cpu_quota": ("cpu", "quota"), "cpu_period": ("cpu", "period"),
               "cpuset_cpus": ("cpu", "cpus"), "cpuset_mems": ("cpu", "mems"),
               "pids_limit": ("pids", "limit"), "blkio_weight": ("block_io", "weight")}


def changes_from_flags(flags: Mapping[str, Any], verb: str = "update") -> dict[str, dict[str, Any]]:
    """{section: {field: value}} from flag values (None: not given; sizes like 64M).

    A value that would remove a limit (-1, but for --memory-swap: unlimited swap) and 0
    are refused: the cgroup layer only sets limits.
    """
    from ..spec import parse_size
    changes: dict[str, dict[str, Any]] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        section, key = FLAG_FIELDS[flag]
        option = "--" + flag.replace("_", "-")
        if key in ("cpus", "mems"):
            changes.setdefault(section, {})[key] = value
            continue
        try:
            number = -1 if str(value) == "-1" else int(parse_size(value))
        except (ValueError, TypeError):
            raise InvalidArgument(f"{verb} {option} {value!r}: not a number or size") from None
        if number < 0 and not (section == "memory" and key == "swap"):
            raise InvalidArgument(f"{verb} {option}={value}: removing a limit is not supported")
        if number == 0:
            raise InvalidArgument(f"{verb} {option} 0: must be > 0")
        changes.setdefault(section, {})[key] = number
    return changes


def update_resources(c: Container, changes: Mapping[str, Mapping[str, Any]]) -> None:
    """Apply ``changes`` ({section: {field: value}} of spec.resources) to the container's
    cgroup, as one validated set with what it has; keep them in its spec and config.

    A created, running or paused container can be updated; a stopped one cannot.
    What the host lacks (a controller, swap accounting, a blkio weight) is a
    StepFailed naming it.
    """
    from pydantic import ValidationError

    from ..config import Resources as ResourcesConfig
    from ..config import decode
    from ..errors import SpecError
    from ..spec import Resources, problems_from
    from ..state import CONFIG_FILE, SPEC_FILE
    from .container import STOPPED
    if c.status() == STOPPED:
        raise InvalidState(f"update id={c.id}: container is not running", container_id=c.id,
                           step="update")
    cg = c.cgroup()
    if cg is None or not cg.exists():
        why = getattr(cg, "why", "")        # none.py: a rootless container without one
        raise InvalidState(f"update id={c.id}: the container has no cgroup"
                           + (f" ({why})" if why else ""), container_id=c.id, step="update")
    store = c.store
    with store.lock(c.id):
        spec = store.read_spec(c.id)
        data = spec.resources.model_dump()
        for section, values in changes.items():
            data[section].update(values)
        try:
            resources = Resources.model_validate(data)
        except ValidationError as exc:
            raise SpecError([f"resources.{line}" for line in problems_from(exc)]) from None
        plain = decode(ResourcesConfig, resources.model_dump(), "resources")
        config = store.read_config(c.id)
        try:
            cg.apply(plain, config.devices)     # the device nodes' allow rules stay
        except StepFailed as exc:
            exc.container_id = c.id
            raise
        spec.resources = resources
        store.write_file(c.id, SPEC_FILE, spec.model_dump_json())
        store.write_file(c.id, CONFIG_FILE, config.replace(resources=plain).to_json())
