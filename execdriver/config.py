"""Config: what a container is, as plain data (frozen dataclasses, no pydantic).

The spec (execdriver.spec, pydantic) is the single validation point; one
function, :func:`execdriver.libcontainer.specconv.config_from_spec`, turns a
validated Spec into a Config. Everything that launches and controls containers
(execdriver.libcontainer, the kernel layer) sees only Config, so a command that
starts, signals, queries or deletes a container never imports pydantic.

The field names are the spec's, so a reader of one knows the other. Lists are
tuples: a Config is immutable and hashable (the seccomp compiler caches on it).
It round-trips through JSON (:meth:`Config.to_json` / :meth:`Config.from_json`);
the state store keeps it as ``config.json`` beside ``state.json``.

This module is a leaf: it imports nothing of execdriver, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

CONFIG_VERSION = 1


class RootMode(str, enum.Enum):
    """How the init enters its rootfs."""

    PIVOT = "pivot"      # pivot_root(2): the host's root is detached (native driver)
    MOVE = "move"        # MS_MOVE onto / (a rootfs on a ramdisk, where pivot_root fails)
    CHROOT = "chroot"    # chroot(2) (the chroot driver)


@dataclass(frozen=True)
class Rlimit:
    type: str
    soft: int
    hard: int


@dataclass(frozen=True)
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...] = ("/bin/sh",)
    env: tuple[tuple[str, str], ...] = ()     # (name, value), in order
    cwd: str = "/"
    user: User = field(default_factory=User)
    umask: int = 0o022
    terminal: bool = False
    stdin: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    no_new_privileges: bool = True
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    preserve_fds: int = 0

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@dataclass(frozen=True)
class Root:
    path: str
    readonly: bool = False
    propagation: str | None = None      # private/rprivate/slave/.../runbindable; None: rslave


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str = "bind"
    source: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    type: str
    path: str | None = None


@dataclass(frozen=True)
class IDMapping:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class MemoryResources:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool = False


@dataclass(frozen=True)
class CPUResources:
    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    cpus: str | None = None
    mems: str | None = None


@dataclass(frozen=True)
class PidsResources:
    limit: int | None = None


@dataclass(frozen=True)
class BlockIOResources:
    weight: int | None = None


@dataclass(frozen=True)
class DeviceRule:
    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"


@dataclass(frozen=True)
class Device:
    path: str
    type: str
    major: int | None = None
    minor: int | None = None
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Resources:
    memory: MemoryResources = field(default_factory=MemoryResources)
    cpu: CPUResources = field(default_factory=CPUResources)
    pids: PidsResources = field(default_factory=PidsResources)
    block_io: BlockIOResources = field(default_factory=BlockIOResources)
    devices: tuple[DeviceRule, ...] = ()


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    host_ip: str = "0.0.0.0"
    protocol: str = "tcp"


@dataclass(frozen=True)
class Route:
    destination: str
    gateway: str | None = None


@dataclass(frozen=True)
class Network:
    mode: str = "none"
    container: str | None = None
    netns_path: str | None = None
    bridge: str = "execdriver0"
    subnet: str = "10.88.0.0/16"
    addresses: tuple[str, ...] = ()
    gateway: str | None = None
    mtu: int | None = None
    routes: tuple[Route, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    dns: tuple[str, ...] = ()
    isolate: bool = False
    host_loopback: bool = False         # slirp4netns: 10.0.2.2 is the host's 127.0.0.1


@dataclass(frozen=True)
class SeccompArg:
    index: int
    value: int
    value_two: int = 0
    op: str = "eq"


@dataclass(frozen=True)
class SeccompRule:
    names: tuple[str, ...]
    action: str = "allow"
    errno: int | None = None
    args: tuple[SeccompArg, ...] = ()


@dataclass(frozen=True)
class SeccompProfile:
    default_action: str = "errno"
    default_errno: int = 1
    syscalls: tuple[SeccompRule, ...] = ()


@dataclass(frozen=True)
class Seccomp:
    mode: str = "default"
    profile: SeccompProfile | None = None


@dataclass(frozen=True)
class Hook:
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class Hooks:
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


@dataclass(frozen=True)
class Config:
    """A container to run: the spec's content plus the runtime's choices."""

    root: Root
    process: Process = field(default_factory=Process)
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    resources: Resources = field(default_factory=Resources)
    devices: tuple[Device, ...] = ()
    network: Network = field(default_factory=Network)
    seccomp: Seccomp = field(default_factory=Seccomp)
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    annotations: tuple[tuple[str, str], ...] = ()
    # -- the runtime's choices, not the spec's ---------------------------------
    root_mode: RootMode = RootMode.PIVOT
    #: the cgroup's name under each hierarchy (OCI cgroupsPath); None: derived from the id
    cgroup_name: str | None = None
    #: the process that starts the init reaps it (runc's model: conmon, containerd-shim)
    caller_reaps: bool = False
    bundle: str | None = None
    version: int = CONFIG_VERSION

    # -- queries ------------------------------------------------------------------
    def namespace_types(self) -> set[str]:
        return {n.type for n in self.namespaces}

    def namespace_path(self, ns_type: str) -> str | None:
        for n in self.namespaces:
            if n.type == ns_type:
                return n.path
        return None

    def hook_steps(self) -> tuple[str, ...]:
        """The OCI steps (camelCase) this config has hooks for."""
        return tuple(step for step, name in HOOK_FIELDS.items() if getattr(self.hooks, name))

    def hooks_of(self, step: str) -> tuple[Hook, ...]:
        return getattr(self.hooks, HOOK_FIELDS[step])

    # -- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _encode(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The Config in ``data``; ValueError naming the first bad field."""
        return decode(cls, data, "config")

    @classmethod
    def from_json(cls, text: str | bytes) -> Config:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


#: OCI hook step -> Hooks field
HOOK_FIELDS = {"prestart": "prestart", "createRuntime": "create_runtime",
               "createContainer": "create_container", "startContainer": "start_container",
               "poststart": "poststart", "poststop": "poststop"}


# --- encoding -----------------------------------------------------------------------
# Both directions are compiled once per type into closures (a run encodes and decodes
# its Config: walking the type hints each time cost ~2 ms of a run).

_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encoder(type(value))(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    enc = _ENCODERS.get(cls)
    if enc is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        plain = (str, int, float, bool, type(None))

        def enc(value: Any) -> dict[str, Any]:
            out = {}
            for name in names:
                v = getattr(value, name)
                out[name] = v if isinstance(v, plain) else _encode(v)
            return out
        _ENCODERS[cls] = enc
    return enc


_DECODERS: dict[Any, Callable[[Any, str], Any]] = {}


def decode(tp: Any, data: Any, where: str) -> Any:
    """``data`` (from JSON, or a pydantic model_dump) as type ``tp``; ValueError naming
    the field path when something does not fit."""
    return _decoder(tp)(data, where)


def _decoder(tp: Any) -> Callable[[Any, str], Any]:
    dec = _DECODERS.get(tp)
    if dec is None:
        dec = _DECODERS[tp] = _compile(tp)
    return dec


def _compile(tp: Any) -> Callable[[Any, str], Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, _UnionType):
        args = typing.get_args(tp)
        optional = type(None) in args
        inner = next(a for a in args if a is not type(None))

        def union(data: Any, where: str) -> Any:
            if data is None and optional:
                return None
            return _decoder(inner)(data, where)
        return union
    if origin is tuple:
        args = typing.get_args(tp)

        def tuple_(data: Any, where: str) -> Any:
            if not isinstance(data, (list, tuple)):
                raise ValueError(f"{where}: want a list, got {type(data).__name__}")
            if len(args) == 2 and args[1] is Ellipsis:
                item = _decoder(args[0])
                return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(data))
            if len(args) != len(data):
                raise ValueError(f"{where}: want {len(args)} items, got {len(data)}")
            return tuple(_decoder(a)(v, f"{where}[{i}]")
                         for i, (a, v) in enumerate(zip(args, data, strict=True)))
        return tuple_
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        cls = tp
        names = frozenset(f.name for f in dataclasses.fields(cls))
        hints = typing.get_type_hints(cls)

        def dataclass_(data: Any, where: str) -> Any:
            if not isinstance(data, dict):
                raise ValueError(f"{where}: want an object, got {type(data).__name__}")
            unknown = data.keys() - names
            if unknown:
                raise ValueError(f"{where}: unknown field {sorted(unknown)[0]}")
            kwargs = {}
            for name, value in data.items():
                if name in _PAIR_FIELDS and isinstance(value, dict):
                    value = list(value.items())
                kwargs[name] = _decoder(hints[name])(value, f"{where}.{name}")
            try:
                return cls(**kwargs)
            except TypeError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return dataclass_
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = tp

        def enum_(data: Any, where: str) -> Any:
            try:
                return members(data)
            except ValueError:
                raise ValueError(f"{where}: {data!r} is not one of "
                                 f"{', '.join(repr(m.value) for m in members)}") from None
        return enum_
    want = {int: ("an integer", lambda d: type(d) is int),
            bool: ("true or false", lambda d: type(d) is bool),
            str: ("a string", lambda d: isinstance(d, str))}.get(tp)
    if want is None:                # Any, float, dict, ...: taken as they are
        return lambda data, where: data
    what, ok = want

    def scalar(data: Any, where: str) -> Any:
        if not ok(data):
            raise ValueError(f"{where}: want {what}, got {type(data).__name__}")
        return data
    return scalar


_UnionType = type(int | None)
#: fields kept as (key, value) pairs that the spec has as a mapping
_PAIR_FIELDS = frozenset({"env", "sysctls", "annotations"})
