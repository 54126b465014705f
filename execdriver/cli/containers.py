"""Verbs on existing containers: kill, pause, unpause, info, list, ps, terminate.

A container's driver is found from the state store (its ``driver`` field) and
loaded by name, so these verbs work for every driver, third-party ones too.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .output import print_json, print_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from execdriver.driver import ExecDriver
    from execdriver.state import ContainerState

EXIT_ERROR = 125


def driver_for(root: str, container_id: str) -> tuple[ExecDriver, ContainerState]:
    """The driver that owns ``container_id`` (loaded even if its host check fails now)."""
    from execdriver.errors import InvalidState
    from execdriver.loader import load_driver
    from execdriver.state import StateStore

    state = StateStore(root).read(container_id)
    if not state.driver:
        raise InvalidState(f"container {container_id}: its creation did not finish; remove it "
                           f"with 'execdriver rm --force {container_id}'", container_id=container_id)
    return load_driver(state.driver, root, check_available=False), state


def cmd_kill(args: argparse.Namespace) -> int:
    from execdriver.cli.parser import UsageError
    from execdriver.driver import parse_signal

    if args.signal and args.signal_opt and args.signal != args.signal_opt:
        raise UsageError("give the signal once (SIGNAL or --signal)", "execdriver kill")
    sig = parse_signal(args.signal_opt or args.signal or "TERM")
    driver, _ = driver_for(args.root, args.id)
    driver.kill(args.id, sig, all=args.all)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """docker stop: the signal, a grace period, then SIGKILL; each failure is one line."""
    import signal as _signal

    from execdriver.driver import Status, parse_signal
    from execdriver.errors import ExecDriverError, InvalidArgument

    from .main import report
    if not args.time >= 0:
        raise InvalidArgument(f"--time {args.time}: must be a number of seconds >= 0")
    sig = parse_signal(args.signal)
    failed = False
    for cid in args.ids:
        try:
            driver, _ = driver_for(args.root, cid)
            status = driver.info(cid).status
            if status == Status.PAUSED:
                driver.unpause(cid)     # a frozen process cannot act on the signal
            if status != Status.STOPPED:
                driver.kill(cid, sig)
                if driver.wait(cid, args.time) is None:
                    driver.kill(cid, _signal.SIGKILL, all=True)
                    driver.wait(cid, 30)
        except ExecDriverError as exc:
            report(exc, args.debug)
            failed = True
            continue
        print(cid, flush=True)
    return 125 if failed else 0


def cmd_pause(args: argparse.Namespace) -> int:
    driver, _ = driver_for(args.root, args.id)
    driver.pause(args.id)
    return 0


def cmd_unpause(args: argparse.Namespace) -> int:
    driver, _ = driver_for(args.root, args.id)
    driver.unpause(args.id)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    driver, _ = driver_for(args.root, args.id)
    data = driver.logs(args.id)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    import json
    import time

    from execdriver.errors import InvalidArgument
    if not args.interval > 0:
        raise InvalidArgument(f"--interval {args.interval}: must be a number of seconds > 0")
    driver, _ = driver_for(args.root, args.id)
    for event in driver.events(args.id, args.interval):
        if args.format == "json":
            print(json.dumps(event.to_dict(), sort_keys=True), flush=True)   # a line each
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event.time))
            detail = ""
            if event.exit_status is not None:
                detail = f" exit_code={describe_exit(event.exit_status.to_dict())}"
            print(f"{when} {event.id} {event.type}{detail}", flush=True)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from execdriver.errors import InvalidArgument, InvalidState

    if args.timeout is not None and not args.timeout >= 0:
        raise InvalidArgument(f"--timeout {args.timeout}: must be a number of seconds >= 0")
    driver, _ = driver_for(args.root, args.id)
    status = driver.wait(args.id, args.timeout)
    if status is None:
        raise InvalidState(f"wait id={args.id}: still running after {args.timeout:g} s",
                           container_id=args.id)
    if args.format == "json":
        print_json(status.to_dict())
    else:
        print(status.exit_code, flush=True)
    return 0


def describe_exit(exit_status: dict[str, Any] | None) -> str | None:
    if not exit_status:
        return None
    if exit_status.get("signal"):
        import signal
        try:
            name = signal.Signals(exit_status["signal"]).name
        except ValueError:
            name = f"signal {exit_status['signal']}"
        text = f"{exit_status['exit_code']} (killed by {name})"
    else:
        text = str(exit_status.get("exit_code", exit_status.get("code")))
    return text + (", OOM-killed" if exit_status.get("oom_killed") else "")


def cmd_info(args: argparse.Namespace) -> int:
    driver, _ = driver_for(args.root, args.id)
    info = driver.info(args.id).to_dict()
    if args.format == "json":
        print_json(info)
        return 0
    rows = [("ID", info["id"]), ("Driver", info["driver"]), ("Status", info["status"]),
            ("Pid", info["pid"]), ("Created", info["created"]), ("Rootfs", info["rootfs"])]
    if info.get("bundle"):
        rows.append(("Bundle", info["bundle"]))
    if info.get("exit_status"):
        rows.append(("Exit code", describe_exit(info["exit_status"])))
    for key, value in sorted((info.get("annotations") or {}).items()):
        rows.append((f"Annotation {key}", value))
    if info.get("resources"):  # driver-specific detail: in full with --format json
        rows.append(("Resources", ", ".join(sorted(info["resources"]))))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}}  {'-' if value is None else value}")
    return 0


def collect_infos(root: str) -> list[dict[str, Any]]:
    """Every container in the state store, asked of its own driver.

    A container whose driver cannot be loaded is still listed, from its state
    file, with status ``unknown`` and the reason under ``error``. Each driver is
    asked once, with list(); one it leaves out is asked alone (info) for its error.
    """
    from execdriver.errors import ContainerNotFound, ExecDriverError
    from execdriver.loader import load_driver
    from execdriver.state import StateStore

    store = StateStore(root)
    drivers: dict[str, Any] = {}
    listed: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for cid in store.ids():
        try:
            state = store.read(cid)
        except ContainerNotFound:
            continue  # removed while we listed
        except ExecDriverError as exc:
            out.append(_from_state(cid, "", "unknown", str(exc)))
            continue
        if not state.driver:
            out.append(_from_state(cid, "", state.status, None, state))
            continue
        if state.driver not in drivers:
            try:
                drivers[state.driver] = driver = load_driver(state.driver, root,
                                                             check_available=False)
            except ExecDriverError as exc:
                drivers[state.driver] = exc
            else:
                try:
                    listed.update((i.id, i.to_dict()) for i in driver.list())
                except ExecDriverError:
                    pass    # each of its containers is asked alone (info), for its own error
        driver = drivers[state.driver]
        if isinstance(driver, Exception):
            out.append(_from_state(cid, state.driver, "unknown", str(driver), state))
            continue
        if cid in listed:
            out.append(listed[cid])
            continue
        try:       # created after the driver listed, or left out for an error
            out.append(driver.info(cid).to_dict())
        except ContainerNotFound:
            continue
        except ExecDriverError as exc:
            out.append(_from_state(cid, state.driver, "unknown", str(exc), state))
    return out


def _from_state(cid: str, driver: str, status: str, err: str | None,
                state: ContainerState | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": cid, "driver": driver, "status": status,
                         "pid": state.pid if state else None,
                         "created": state.created if state else None,
                         "rootfs": state.rootfs if state else None,
                         "bundle": state.bundle if state else None,
                         "exit_status": state.exit if state else None,
                         "annotations": dict(state.annotations) if state else {},
                         "resources": dict(state.resources) if state else {}}
    if err:
        d["error"] = err
    return d


def cmd_list(args: argparse.Namespace) -> int:
    infos = collect_infos(args.root)
    if args.format == "json":
        print_json([i["id"] for i in infos] if args.quiet else infos)
    elif args.quiet:
        for info in infos:
            print(info["id"])
    else:
        rows = []
        for i in infos:
            status = i["status"]
            if status == "stopped" and i.get("exit_status"):
                status += f" ({describe_exit(i['exit_status'])})"
            rows.append((i["id"], i["driver"] or "-", status, i["pid"], i["created"],
                         i["rootfs"] if not i.get("error") else f"{i['rootfs']}  [{i['error']}]"))
        print_table(("ID", "DRIVER", "STATUS", "PID", "CREATED", "ROOTFS"), rows)
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace") or "?"
    except OSError:
        return "?"


def cmd_ps(args: argparse.Namespace) -> int:
    driver, _ = driver_for(args.root, args.id)
    pids = sorted(driver.pids(args.id))
    if args.format == "json":
        print_json({"id": args.id, "pids": pids})
    else:
        print_table(("PID", "COMMAND"), [(pid, _cmdline(pid)) for pid in pids])
    return 0


def terminate_one(root: str, cid: str, force: bool) -> None:
    from execdriver.errors import InvalidState
    from execdriver.state import StateStore

    store = StateStore(root)
    state = store.read(cid)
    if not state.driver:
        # Claimed but its state never written: nothing was created, so nothing to undo.
        if not force:
            raise InvalidState(f"container {cid}: its creation did not finish; use --force "
                               "to remove it", container_id=cid)
        store.remove(cid)
        return
    driver, _ = driver_for(root, cid)
    if not force:
        status = driver.info(cid).status.value
        if status in ("running", "paused"):
            raise InvalidState(f"container {cid} is {status}: stop it first or use --force",
                               container_id=cid)
    driver.terminate(cid)


def cmd_terminate(args: argparse.Namespace) -> int:
    """Remove each container; report each failure on its own line and go on."""
    return for_each(args, lambda cid: terminate_one(args.root, cid, args.force))


def for_each(args: argparse.Namespace, act: Callable[[str], object]) -> int:
    """``act`` on each of ``args.ids``: print each id it did (unless --format json), one
    line for each failure, and go on; 125 when any failed."""
    from execdriver.errors import ExecDriverError

    from .main import report

    failed = False
    for cid in args.ids:
        try:
            act(cid)
        except ExecDriverError as exc:
            report(exc, args.debug)
            failed = True
            continue
        if getattr(args, "format", "text") != "json":
            print(cid, flush=True)
    return EXIT_ERROR if failed else 0

