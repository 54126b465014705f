"""state, start, kill, delete: the verbs an orchestrator calls over and over.

Their common path imports neither pydantic nor a driver (see state.py). Each
function returns False when the work needs the driver after all (kill --all,
delete of a live container or of one with more than an empty cgroup left);
the caller then takes the slow path in lifecycle.py.
"""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Callable
from typing import Any

from ..hooks import run_hooks, run_hooks_warn
from . import state


def state_of(root: str, container_id: str) -> dict[str, Any]:
    return state.oci_state(root, state.read(root, container_id))


def start(root: str, container_id: str, warn: Callable[[str], None]) -> None:
    """Run startContainer hooks, let the init exec, run poststart hooks."""
    st = state.read(root, container_id)
    now = state.status(root, st)
    if now != "created":
        raise state.start_error(now)
    hooks = state.hooks_of(st, "startContainer")
    if hooks:
        try:
            run_hooks(hooks, state.oci_state(root, st, "created"), "startContainer",
                      namespaces_of=st["pid"])
        except BaseException:
            # runtime-spec: a failed startContainer hook stops the container
            try:
                os.kill(st["pid"], _signal.SIGKILL)
            except ProcessLookupError:
                pass
            raise
    state.open_exec_fifo(root, st)
    hooks = state.hooks_of(st, "poststart")
    if hooks:
        run_hooks_warn(hooks, state.oci_state(root, st, "running"), "poststart", warn)


def kill(root: str, container_id: str, sig: int, all_processes: bool) -> bool:
    """Signal the init; True when done, False when the driver must (--all)."""
    st = state.read(root, container_id)
    if all_processes:
        # runc 1.1 answers kill --all of a stopped container with success
        return state.status(root, st) == "stopped"
    state.signal_init(root, st, sig)
    return True


def delete(root: str, container_id: str, force: bool, warn: Callable[[str], None]) -> bool:
    """Delete a stopped container; True when done, False when the driver must."""
    try:
        st = state.read(root, container_id)
    except state.ContainerNotFound:
        state.clear_creating(root, container_id)
        if force:
            return True
        raise
    now = state.status(root, st)
    if now in ("running", "paused", "creating") and not force:
        raise state.not_stopped(container_id, now)
    if now != "stopped":
        return False
    removed = state.remove_stopped(root, container_id)
    if removed is None:
        return False
    run_poststop(root, removed, warn)
    return True


def run_poststop(root: str, st: dict[str, Any], warn: Callable[[str], None]) -> None:
    hooks = state.hooks_of(st, "poststop")
    if hooks:
        run_hooks_warn(hooks, state.oci_state(root, st, "stopped"), "poststop", warn)
