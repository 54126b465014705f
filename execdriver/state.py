"""The state store: one directory per container under a root.

``<root>/<id>/state.json`` is written temp-then-rename, so a reader never
sees a torn file. No fsync: the state describes live processes, which a power
loss ends anyway (and the default root, /run, is tmpfs); a crash of the
runtime itself is covered by the rename alone. ``create`` is a ``mkdir``, so of many parallel creates
of one id exactly one wins. A per-container ``flock`` on the directory guards
read-modify-write. Resources are recorded *before* they are created so that
``terminate`` can always clean up, whatever point a crash stopped us at.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ContainerExists, ContainerNotFound, InvalidArgument, StateCorrupt
from .kernel.fileio import (
    read_bytes,
    write_atomic,  # public here too: the one atomic write
)
from .kernel.procstat import pid_start_time  # public here too
from .kernel.procstat import stat_fields as _stat_fields

if TYPE_CHECKING:  # pydantic is heavy: the CLI's list/kill/state must not pay for it
    from .config import Config
    from .spec import Spec

DEFAULT_ROOT = "/run/execdriver"
CGROUP_PARENT = "execdriver"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STATE_FILE = "state.json"
SPEC_FILE = "spec.json"
CONFIG_FILE = "config.json"
#: a detached container's stdout and stderr when it was started without stdio
LOG_FILE = "output.log"


def default_root() -> Path:
    """$EXECDRIVER_ROOT, else /run/execdriver (see user_root)."""
    from .userroot import user_root
    return Path(os.environ.get("EXECDRIVER_ROOT") or user_root(DEFAULT_ROOT))


def default_cgroup_name(state_root: str | os.PathLike[str], container_id: str) -> str:
    """``execdriver/<id>`` for the default state root; one parent per other root, so
    the same id under two state roots never shares a cgroup."""
    root = os.path.abspath(state_root)
    if root == DEFAULT_ROOT:
        return f"{CGROUP_PARENT}/{container_id}"
    import hashlib
    return f"{CGROUP_PARENT}-{hashlib.sha256(root.encode()).hexdigest()[:10]}/{container_id}"


def validate_id(container_id: str) -> str:
    if not isinstance(container_id, str) or not ID_RE.match(container_id):
        raise InvalidArgument(
            f"container id {container_id!r}: must be 1-128 characters of letters, digits, "
            "'_', '.', '-' and start with a letter or digit")
    return container_id


def pid_alive(pid: int | None, start_time: int | None) -> bool:
    """True if ``pid`` is running and is the same process (not a reused pid).

    A record without a start time cannot be verified, so it is not running: a
    corrupt or forged state must never lead to signalling someone else's process.
    """
    if not start_time or type(pid) is not int or pid <= 0:
        return False
    fields = _stat_fields(pid)
    return len(fields) > 19 and fields[19] == str(start_time).encode() and \
        fields[0] not in (b"Z", b"X")


def pid_running(pid: int) -> bool:
    """True if some process (not a zombie) has ``pid`` now, whichever it is."""
    fields = _stat_fields(pid) if type(pid) is int and pid > 0 else []
    return bool(fields) and fields[0] not in (b"Z", b"X")


@dataclass
class ContainerState:
    id: str
    driver: str
    status: str = "creating"
    pid: int | None = None
    pid_start: int | None = None
    created: str = ""
    rootfs: str | None = None
    bundle: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    exit: dict[str, Any] | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)       # a driver's own notes
    #: the process that reaps the init and records its exit (native: the monitor; lxc: lxc's)
    monitor_pid: int | None = None
    monitor_start: int | None = None
    detached: bool = False
    #: the OCI hook steps the container's config has (no config read when it has none)
    hooks: list[str] = field(default_factory=list)
    #: the runtime process creating it, while status is "creating"
    creator_pid: int | None = None
    creator_start: int | None = None

    def to_json(self) -> str:
        # A shallow dict serialises the same as asdict() (5x faster: no deep copy);
        # asdict() stays the fallback for a value json cannot take as is.
        try:
            return json.dumps({f: getattr(self, f) for f in _STATE_FIELDS}, sort_keys=True)
        except TypeError:
            return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContainerState:
        """The state in ``d``; TypeError naming the first field of the wrong type."""
        if not isinstance(d, dict):
            raise TypeError("not a JSON object")
        st = cls(**{k: v for k, v in d.items() if k in _STATE_TYPES})
        for name, types in _STATE_TYPES.items():
            value = getattr(st, name)
            # bool is an int to isinstance(), never a pid or a start time
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise TypeError(f"field {name} is {type(value).__name__}")
        return st

    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_start)

    def monitor_alive(self) -> bool:
        return pid_alive(self.monitor_pid, self.monitor_start)

    def creator_alive(self) -> bool:
        return pid_alive(self.creator_pid, self.creator_start)


_STATE_FIELDS = tuple(ContainerState.__dataclass_fields__)
_OPT_STR, _OPT_INT, _OPT_DICT = (str, type(None)), (int, type(None)), (dict, type(None))
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "driver": (str,), "status": (str,), "pid": _OPT_INT, "pid_start": _OPT_INT,
    "created": (str,), "rootfs": _OPT_STR, "bundle": _OPT_STR, "resources": (dict,),
    "exit": _OPT_DICT, "annotations": (dict,), "extra": (dict,), "monitor_pid": _OPT_INT,
    "monitor_start": _OPT_INT, "detached": (bool,), "hooks": (list,), "creator_pid": _OPT_INT,
    "creator_start": _OPT_INT}
assert set(_STATE_TYPES) == set(_STATE_FIELDS)


_RENAME_NOREPLACE = 1


def _rename_noreplace(src: Path, dst: Path) -> None:
    """renameat2(RENAME_NOREPLACE): FileExistsError if ``dst`` exists (even empty)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst),
                      _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(dst))


class StateStore:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_root()

    # -- paths ---------------------------------------------------------------
    def dir(self, container_id: str) -> Path:
        return self.root / validate_id(container_id)

    def exists(self, container_id: str) -> bool:
        return self.dir(container_id).is_dir()

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if ID_RE.match(n) and (self.root / n).is_dir())

    # -- lifecycle -----------------------------------------------------------
    def create(self, container_id: str, driver: str, spec: Spec | None = None, *,
               config: Config | None = None, files: dict[str, str] | None = None,
               **fields: Any) -> ContainerState:
        """Claim the id (atomically) and write the first state. ContainerExists if taken.

        With ``config``, config.json is written too (and rootfs, bundle, annotations
        and hooks come from it); ``files`` are other files to put in the directory.
        The state names this process as the creator, until the caller changes it.

        The directory is filled under a hidden name and renamed into place with
        RENAME_NOREPLACE, so no reader ever sees a container without its state,
        and of many parallel creates of one id exactly one wins.
        """
        d = self.dir(container_id)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if d.exists():
            raise ContainerExists(container_id)
        self.sweep(container_id)
        tmp = self.root / f".new-{container_id}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir(mode=0o700)
        try:
            me = os.getpid()
            fields.setdefault("creator_pid", me)
            fields.setdefault("creator_start", pid_start_time(me))
            st = ContainerState(id=container_id, driver=driver,
                                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                rootfs=spec.root.path if spec else None, **fields)
            if spec is not None:
                st.annotations = dict(spec.annotations)
                write_atomic(tmp / SPEC_FILE, spec.model_dump_json())
            if config is not None:
                st.rootfs, st.bundle = config.root.path, config.bundle
                st.annotations = dict(config.annotations)
                st.hooks = list(config.hook_steps())
                write_atomic(tmp / CONFIG_FILE, config.to_json())
            for name, text in (files or {}).items():
                write_atomic(tmp / name, text)
            write_atomic(tmp / STATE_FILE, st.to_json())
            try:
                _rename_noreplace(tmp, d)
            except FileExistsError:
                raise ContainerExists(container_id) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return st

    def write(self, st: ContainerState) -> None:
        write_atomic(self.dir(st.id) / STATE_FILE, st.to_json())

    def read(self, container_id: str) -> ContainerState:
        # (plain os calls: list and stats read a thousand of these)
        d = os.path.join(self.root, validate_id(container_id))
        path = os.path.join(d, STATE_FILE)
        for attempt in range(3):
            try:
                text = read_bytes(path)
                break
            except FileNotFoundError:
                if not os.path.isdir(d):
                    # A create killed before its rename leaves only a hidden directory:
                    # whoever looks the id up (terminate above all) clears it, not just
                    # the id's next create.
                    self.sweep(container_id)
                    raise ContainerNotFound(container_id) from None
                # A create renames a full directory into place, so a directory without
                # a state file is either one that a concurrent terminate moved away and
                # a concurrent create put back between our two looks (read again), or
                # one claimed and never written (by a create that died right after mkdir).
                if attempt == 2:
                    return ContainerState(id=container_id, driver="", status="creating")
        try:
            st = ContainerState.from_dict(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise StateCorrupt(f"state id={container_id}: unreadable state file: {exc}",
                               container_id=container_id) from None
        if st.id != container_id:
            raise StateCorrupt(f"state id={container_id}: the state file names id {st.id!r}",
                               container_id=container_id)
        return st

    def read_or_none(self, container_id: str) -> ContainerState | None:
        try:
            return self.read(container_id)
        except (ContainerNotFound, StateCorrupt, InvalidArgument):
            return None

    def read_spec(self, container_id: str) -> Spec:
        from .spec import Spec
        path = self.dir(container_id) / SPEC_FILE
        try:
            return Spec.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None

    def write_file(self, container_id: str, name: str, text: str) -> None:
        """Replace a file of the container's directory atomically (config.json, spec.json)."""
        write_atomic(self.dir(container_id) / name, text)

    def read_config(self, container_id: str) -> Config:
        """The container's Config (StateCorrupt if unreadable; no pydantic)."""
        from .config import Config
        path = self.dir(container_id) / CONFIG_FILE
        try:
            return Config.from_json(path.read_text())
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None
        except ValueError as exc:
            raise StateCorrupt(f"state id={container_id}: unreadable config.json: {exc}",
                               container_id=container_id) from None

    def update(self, container_id: str, change: Callable[[ContainerState], None]) -> ContainerState:
        """Read, change and write the state under the container's lock."""
        with self.lock(container_id):
            st = self.read(container_id)
            change(st)
            self.write(st)
            return st

    def record(self, container_id: str, kind: str, value: Any) -> None:
        """Note a resource *before* creating it, so terminate can undo it."""
        def add(st: ContainerState) -> None:
            items = st.resources.setdefault(kind, [])
            if value not in items:
                items.append(value)
        self.update(container_id, add)

    def remove(self, container_id: str) -> None:
        """Remove atomically for readers: rename out of sight, then delete."""
        d = self.dir(container_id)
        tomb = self.root / f".gone-{container_id}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(d, tomb)
        except FileNotFoundError:
            pass
        else:
            shutil.rmtree(tomb, ignore_errors=True)
        self.sweep(container_id)

    def sweep(self, container_id: str) -> None:
        """Delete hidden create/remove leftovers of this id whose process is gone
        (a runtime killed between mkdir and rename)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        for name in names:
            for prefix in (f".new-{container_id}-", f".gone-{container_id}-"):
                if name.startswith(prefix):
                    pid = name[len(prefix):].split("-", 1)[0]
                    if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
                        shutil.rmtree(self.root / name, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, container_id: str, shared: bool = False) -> Iterator[None]:
        d = self.dir(container_id)
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            # While we waited, the container may have been removed (and a new one
            # created under the same id): the lock we hold is the old one's.
            try:
                same = os.stat(d).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                raise ContainerNotFound(container_id)
            yield
        finally:
            os.close(fd)
