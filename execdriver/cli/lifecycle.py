"""``create``, ``start`` and ``update``: docker's two-step start, and new limits for a live container."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .containers import driver_for, for_each
from .output import print_json

if TYPE_CHECKING:
    from execdriver.driver import ExecDriver, Handle

#: run's flags create refuses: (dest, flag, why)
NOT_FOR_CREATE = (("detach", "-d", "a created container is detached anyway"),
                  ("tty", "-t", "start -a attaches its output only, not a terminal"),
                  ("interactive", "-i", "start -a attaches its output only, not stdin"),
                  ("rm", "--rm", "remove it with 'execdriver rm' once it stopped"),
                  ("keep", "--keep", "a created container is kept anyway"))


def cmd_create(args: argparse.Namespace) -> int:
    from execdriver.cli.parser import UsageError

    from .run import make_detached, new_container

    for dest, flag, why in NOT_FOR_CREATE:
        if getattr(args, dest, False):
            raise UsageError(f"{flag}: not with create ({why})", "execdriver create")
    driver, cid, spec = new_container(args)
    make_detached(driver, cid, lambda: driver.create(cid, spec))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """Start each created container (one line per failure, then go on); with --attach,
    one container in the foreground."""
    from execdriver.cli.parser import UsageError

    if args.attach:
        if len(args.ids) != 1:
            raise UsageError("--attach: one container at a time", "execdriver start")
        driver, _ = driver_for(args.root, args.ids[0])
        return start_attached(driver, args.ids[0])
    return for_each(args, lambda cid: driver_for(args.root, cid)[0].start_created(cid))


def start_attached(driver: ExecDriver, cid: str) -> int:
    """docker start -a: start, copy what it writes (its log) to our stdout, forward
    signals, exit with its code; the container is kept."""
    from execdriver.state import LOG_FILE

    from .run import run_foreground

    log = driver.state.dir(cid) / LOG_FILE
    offset = 0

    def begin() -> Handle:
        handle = driver.handle(cid)     # first: a quick exit is not missed
        driver.start_created(cid)
        return handle

    def follow() -> None:
        nonlocal offset
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            offset += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    sys.stdout.flush()
    return run_foreground(driver, cid, None, begin=begin, follow=follow).exit_code


def update_changes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} from update's flags (--cpus: a quota per 100 ms period)."""
    from execdriver.cli.parser import UsageError
    from execdriver.errors import InvalidArgument
    from execdriver.libcontainer.update import FLAG_FIELDS, changes_from_flags

    from .overrides import CPU_PERIOD, cpu_quota

    flags = {dest: getattr(args, dest, None) for dest in FLAG_FIELDS}
    if args.cpus is not None:
        if args.cpu_quota is not None or args.cpu_period is not None:
            raise UsageError("--cpus: not with --cpu-quota or --cpu-period", "execdriver update")
        problems: list[str] = []
        quota = cpu_quota(args.cpus, problems)
        if quota is None:
            raise InvalidArgument(f"update {problems[0]}")
        flags["cpu_quota"], flags["cpu_period"] = str(quota), str(CPU_PERIOD)
    changes = changes_from_flags(flags)
    if not changes:
        raise UsageError("nothing to change: give a limit, e.g. --memory 64M", "execdriver update")
    return changes


def cmd_update(args: argparse.Namespace) -> int:
    """Update each container (one line per failure, then go on); --format json: the
    limits each has now."""
    changes = update_changes(args)
    done: list[dict[str, Any]] = []

    def update(cid: str) -> None:
        driver, _ = driver_for(args.root, cid)
        driver.update_resources(cid, changes)
        if args.format == "json":
            done.append({"id": cid,
                         "resources": driver.state.read_spec(cid).resources.model_dump()})
    code = for_each(args, update)
    if args.format == "json":
        print_json(done)
    return code
