"""OCI state, and the fast paths of the verbs an orchestrator calls all the time.

``state``, ``start``, ``kill`` and ``delete`` of a stopped container read and
write the state store's ``state.json`` directly with ``json``: no pydantic, no
driver. The file format, lock and temp-then-rename writes are the state
store's (execdriver.state); the constants below must match it and
execdriver.linuxdriver (a unit test checks that they do).

OCI status of a container, from the record:

- ``creating``: an ``execdriver-oci create`` is still running for it (its
  marker file names a live process), or the driver has not finished;
- ``created``: the init is alive and still waits on the exec fifo;
- ``running`` / ``paused``: alive, fifo gone; paused when its cgroup is frozen;
- ``stopped``: the init is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal as _signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ContainerNotFound, ExecDriverError, InvalidArgument, InvalidState, StateCorrupt

DEFAULT_ROOT = "/run/execdriver-oci"
OCI_VERSION = "1.0.2"
STATE_FILE = "state.json"          # execdriver.state.STATE_FILE
FIFO_FILE = "exec.fifo"            # execdriver.linuxdriver.FIFO_FILE
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")   # execdriver.state.ID_RE
FIFO_TIMEOUT = 10.0


# --- runc's error messages (podman and containerd match on these) -----------

def not_running() -> InvalidState:
    return InvalidState("container not running", step="kill")


def not_stopped(container_id: str, status: str) -> InvalidState:
    return InvalidState(f"cannot delete container {container_id} that is not stopped: {status}",
                        container_id=container_id, step="delete")


# --- processes ----------------------------------------------------------------

# One implementation of "is it still the same process" for the whole project;
# execdriver.state imports no pydantic, so the OCI fast verbs stay light.
from ..state import pid_alive, pid_start_time  # noqa: E402,F401


def wait_gone(pid: int | None, start: int | None, timeout: float) -> bool:
    """Wait until ``pid`` (any process, not only a child) has exited."""
    if not pid_alive(pid, start):
        return True
    import select
    try:
        fd = os.pidfd_open(pid or 0)
    except ProcessLookupError:
        return True
    try:
        if not pid_alive(pid, start):
            return True
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def parse_signal(value: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> 9 (runc's rules)."""
    if value.isdigit():
        num = int(value)
        if 1 <= num <= _signal.SIGRTMAX:
            return num
        raise InvalidArgument(f"signal {value}: out of range")
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise InvalidArgument(f"unknown signal {value!r}") from None


# --- the record -------------------------------------------------------------

def container_dir(root: str, container_id: str) -> str:
    if not ID_RE.match(container_id or ""):
        raise InvalidArgument(
            f"container id {container_id!r}: must be 1-128 characters of letters, digits, "
            "'_', '.', '-' and start with a letter or digit")
    return os.path.join(root, container_id)


def read(root: str, container_id: str) -> dict[str, Any]:
    """The state store's record of a container (ContainerNotFound if none)."""
    d = container_dir(root, container_id)
    try:
        with open(os.path.join(d, STATE_FILE)) as f:
            text = f.read()
    except FileNotFoundError:
        if os.path.isdir(d):    # claimed, never written: a create that died right away
            return {"id": container_id, "driver": "", "status": "creating", "resources": {},
                    "extra": {}, "annotations": {}}
        raise ContainerNotFound(container_id) from None
    try:
        st = json.loads(text)
    except ValueError as exc:
        raise StateCorrupt(f"state id={container_id}: unreadable state file: {exc}",
                           container_id=container_id) from None
    if not isinstance(st, dict):
        raise StateCorrupt(f"state id={container_id}: state file is not a JSON object",
                           container_id=container_id)
    return st


def write(root: str, st: dict[str, Any]) -> None:
    """Temp-then-rename with fsync, like the state store."""
    path = os.path.join(container_dir(root, st["id"]), STATE_FILE)
    tmp = os.path.join(os.path.dirname(path), f".{STATE_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(st, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


@contextlib.contextmanager
def lock(root: str, container_id: str) -> Iterator[None]:
    """The state store's per-container flock (on the directory)."""
    try:
        fd = os.open(container_dir(root, container_id), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ContainerNotFound(container_id) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(root: str, container_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    with lock(root, container_id):
        st = read(root, container_id)
        change(st)
        write(root, st)
        return st


def oci_extra(st: dict[str, Any]) -> dict[str, Any]:
    """What the front end keeps in the record: bundle, hooks."""
    return (st.get("extra") or {}).get("oci") or {}


def hooks_of(st: dict[str, Any], step: str) -> list[dict[str, Any]]:
    return list((oci_extra(st).get("hooks") or {}).get(step) or [])


# --- "creating": a marker file naming the create in progress -----------------

def _marker(root: str, container_id: str) -> str:
    # A leading dot: not a valid id, so the state store's ids() never lists it.
    return os.path.join(root, f".{container_id}.creating")


def mark_creating(root: str, container_id: str) -> str:
    container_dir(root, container_id)
    os.makedirs(root, mode=0o700, exist_ok=True)
    token = f"{os.getpid()} {pid_start_time(os.getpid())}"
    path = _marker(root, container_id)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(token)
    os.rename(tmp, path)
    return token


def clear_creating(root: str, container_id: str, token: str | None = None) -> None:
    """Remove the marker (only ours, when ``token`` is given)."""
    path = _marker(root, container_id)
    try:
        if token is not None:
            with open(path) as f:
                if f.read() != token:
                    return
        os.unlink(path)
    except FileNotFoundError:
        pass


def creator_alive(root: str, container_id: str) -> bool:
    try:
        with open(_marker(root, container_id)) as f:
            pid, _, start = f.read().partition(" ")
        return pid_alive(int(pid), int(start) if start.isdigit() else None)
    except (OSError, ValueError):
        return False


# --- status -------------------------------------------------------------------

def cgroup_record(st: dict[str, Any]) -> dict[str, Any] | None:
    recs = (st.get("resources") or {}).get("cgroup") or []
    return recs[0] if recs else None


def verified_cgroup(root: str, st: dict[str, Any]) -> Any:
    """The container's cgroup manager if the record is verifiably its own (see
    kernel/cgroups/ownership.py); StateCorrupt otherwise; None if it has none."""
    rec = cgroup_record(st)
    if rec is None:
        return None
    from ..kernel.cgroups import ownership
    from ..state import default_cgroup_name
    return ownership.verified(rec, ownership.owner_token(container_dir(root, st["id"])),
                              default_cgroup_name(root, st["id"]))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def frozen(st: dict[str, Any]) -> bool:
    rec = cgroup_record(st)
    if not rec:
        return False
    if rec.get("version") == 2:
        events = _read(os.path.join(str(rec.get("path", "")), "cgroup.events")) or ""
        return "frozen 1" in events.splitlines()
    freezer = str((rec.get("paths") or {}).get("freezer") or "")
    return bool(freezer) and (_read(os.path.join(freezer, "freezer.state")) or "").strip() == "FROZEN"


def status(root: str, st: dict[str, Any]) -> str:
    if creator_alive(root, st["id"]):
        return "creating"
    alive = pid_alive(st.get("pid"), st.get("pid_start"))
    if st.get("status") == "creating":
        return "creating" if alive else "stopped"
    if not alive:
        return "stopped"
    if frozen(st):
        return "paused"
    if os.path.exists(os.path.join(root, st["id"], FIFO_FILE)):
        return "created"
    return "running"


def oci_state(root: str, st: dict[str, Any], status_now: str | None = None) -> dict[str, Any]:
    """The OCI state JSON (runc's fields: rootfs, created, owner as well)."""
    status_now = status_now or status(root, st)
    out: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "id": st["id"],
        "pid": (st.get("pid") or 0) if status_now != "stopped" else 0,
        "status": status_now,
        "bundle": st.get("bundle") or oci_extra(st).get("bundle") or "",
        "rootfs": st.get("rootfs") or "",
        "created": st.get("created") or "",
        "owner": "",
    }
    if st.get("annotations"):
        out["annotations"] = dict(st["annotations"])
    return out


def write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` atomically (a reader never sees an empty file), like runc."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


# --- fast verbs -----------------------------------------------------------------

def open_exec_fifo(root: str, st: dict[str, Any]) -> None:
    """Let a created container's init go on to exec (the native driver's start_created).

    The fifo is opened non-blocking and polled, so an init that died meanwhile
    gives an error instead of a hang.
    """
    import select
    cid = st["id"]
    fifo = os.path.join(root, cid, FIFO_FILE)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + FIFO_TIMEOUT
        while True:
            ready = select.select([fd], [], [], 0.05)[0]
            if ready:
                try:
                    data = os.read(fd, 1)
                except BlockingIOError:
                    data = b""
                if data:
                    break
            if not pid_alive(st.get("pid"), st.get("pid_start")):
                raise InvalidState("cannot start a container that has stopped", container_id=cid)
            if time.monotonic() > deadline:
                raise InvalidState(f"start id={cid}: the init did not open the exec fifo "
                                   f"within {FIFO_TIMEOUT:.0f}s", container_id=cid)
    finally:
        os.close(fd)
    try:
        os.unlink(fifo)
    except FileNotFoundError:
        pass
    update(root, cid, lambda s: s.__setitem__("status", "running"))


def start_error(status_now: str) -> InvalidState:
    if status_now == "stopped":
        return InvalidState("cannot start a container that has stopped")
    if status_now == "running":
        return InvalidState("cannot start an already running container")
    return InvalidState(f"cannot start a container in the {status_now} state")


def thaw(root: str, st: dict[str, Any]) -> None:
    try:
        cg = verified_cgroup(root, st)
    except StateCorrupt:
        return          # never write into a cgroup the record cannot prove is its own
    if cg is None:
        return
    try:
        cg.thaw()
    except ExecDriverError:
        pass


def signal_init(root: str, st: dict[str, Any], sig: int) -> None:
    """runc's kill without --all: signal the init; a paused one is thawed for SIGKILL."""
    now = status(root, st)
    if now in ("stopped", "creating") or not pid_alive(st.get("pid"), st.get("pid_start")):
        raise not_running()
    try:
        os.kill(st["pid"], sig)
    except ProcessLookupError:
        raise not_running() from None
    if now == "paused" and sig == _signal.SIGKILL:
        thaw(root, st)


def _procs_in(directory: str) -> bool:
    for dirpath, _dirs, _files in os.walk(directory):
        if (_read(os.path.join(dirpath, "cgroup.procs")) or "").strip():
            return True
    return False


def remove_stopped(root: str, container_id: str) -> dict[str, Any] | None:
    """Delete a stopped container without the driver, when nothing but an empty
    cgroup is left to undo. Returns the record it removed, or None when the
    driver must do it (network, live processes, a monitor still running...)."""
    with lock(root, container_id):
        st = read(root, container_id)
        if pid_alive(st.get("pid"), st.get("pid_start")):
            return None
        extra = st.get("extra") or {}
        if pid_alive(extra.get("monitor_pid"), extra.get("monitor_start")):
            return None
        if set(st.get("resources") or {}) - {"cgroup"}:
            return None
        try:
            cg = verified_cgroup(root, st)
        except StateCorrupt:
            return None     # the driver's terminate refuses it and says why
        if cg is not None:
            if any(_procs_in(p) for p in cg.directories()):
                return None
            try:
                cg.destroy()        # nothing left to kill: rmdir, and empty parents
            except ExecDriverError:
                return None
        import shutil
        shutil.rmtree(container_dir(root, container_id), ignore_errors=True)
    clear_creating(root, container_id)
    return st
