"""The container spec: one pydantic model shared by every driver.

Defaults describe a safe container: the default capability set, masked and
read-only paths, no_new_privileges on, the default seccomp profile. Sizes
accept ``"64M"`` or ``"1G"``. :func:`load_spec` turns any validation failure
into a :class:`SpecError` with one ``path: reason`` line per bad field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import SpecError

SPEC_VERSION = "1"

# --- capabilities -----------------------------------------------------------

from .kernel.capnames import CAP_NUMBERS, CAPABILITIES, normalize_capability  # noqa: E402,F401

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def _cap_list(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError("capabilities are names like CAP_NET_ADMIN")
            cap = normalize_capability(item)
            if cap not in out:
                out.append(cap)
        return out
    return value


CapList = Annotated[list[str], BeforeValidator(_cap_list)]


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain a NUL byte")
    return value


# A string the kernel gets as a C string (a path, an argv or env entry, a mount
# option...): an embedded NUL would cut it short or fail deep inside create.
CString = Annotated[str, AfterValidator(_no_nul)]

# --- sizes ------------------------------------------------------------------

_SIZE_RE = re.compile(r"\s*(\d+)(?:\.(\d+))?\s*([kmgtp]?)(i?b?)\s*", re.I)
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
MAX_SIZE = 2**63 - 1        # the cgroup files hold a signed 64-bit byte count


def parse_size(value: Any) -> Any:
    """Accept ints and strings like ``64M``, ``1G``, ``512k``, ``1.5GiB``; at most MAX_SIZE."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 64M or a number of bytes")
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if not m:
            raise ValueError(f"{value!r} is not a size (use e.g. 64M, 1G)")
        whole, frac, unit = m.group(1).lstrip("0"), (m.group(2) or "")[:20], m.group(3).lower()
        if len(whole) > 19:         # more digits than MAX_SIZE: skip the arithmetic
            raise ValueError(f"too large (at most {MAX_SIZE} bytes)")
        mult = _SIZE_MULT[unit]     # integer arithmetic: a float would round or overflow
        value = int(whole or 0) * mult + (int(frac or 0) * mult) // 10 ** len(frac)
    if isinstance(value, float) and value.is_integer():
        value = int(value)          # other floats: pydantic's int validation refuses them
    if isinstance(value, int) and value > MAX_SIZE:
        raise ValueError(f"too large (at most {MAX_SIZE} bytes)")
    return value


Size = Annotated[int, BeforeValidator(parse_size)]


class _Model(BaseModel):
    # No validate_assignment: callers may change fields one by one through
    # states that are briefly inconsistent; drivers re-validate the whole
    # spec (revalidate) before creating anything.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- process ----------------------------------------------------------------

RLIMIT_NAMES = ("cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile",
                "memlock", "as", "locks", "sigpending", "msgqueue", "nice",
                "rtprio", "rttime")


class Rlimit(_Model):
    type: str = Field(description="rlimit name: nofile, RLIMIT_NOFILE, ...")
    soft: int = Field(ge=0)
    hard: int = Field(ge=0)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        name = v.strip().lower().removeprefix("rlimit_")
        if name not in RLIMIT_NAMES:
            raise ValueError(f"unknown rlimit {v!r}")
        return name

    @model_validator(mode="after")
    def _order(self) -> Rlimit:
        if self.soft > self.hard:
            raise ValueError("soft limit must be <= hard limit")
        return self


class User(_Model):
    uid: int = Field(0, ge=0, lt=2**32 - 1)
    gid: int = Field(0, ge=0, lt=2**32 - 1)
    additional_gids: list[Annotated[int, Field(ge=0, lt=2**32 - 1)]] = []


class Capabilities(_Model):
    bounding: CapList = Field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    effective: CapList = Field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    permitted: CapList = Field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    inheritable: CapList = []
    ambient: CapList = []

    @model_validator(mode="after")
    def _subsets(self) -> Capabilities:
        for name in ("effective", "ambient"):
            extra = set(getattr(self, name)) - set(self.permitted)
            if extra:
                raise ValueError(f"{name} capabilities not in permitted: {', '.join(sorted(extra))}")
        extra = set(self.ambient) - set(self.inheritable)
        if extra:
            raise ValueError(f"ambient capabilities not in inheritable: {', '.join(sorted(extra))}")
        return self

    def with_changes(self, add: list[str], drop: list[str]) -> Capabilities:
        """Return a copy with caps added to / dropped from bounding, effective, permitted."""
        add_n = [normalize_capability(c) for c in add if c.upper() != "ALL"]
        if any(c.upper() == "ALL" for c in add):
            add_n = list(CAPABILITIES)
        drop_all = any(c.upper() == "ALL" for c in drop)
        drop_n = set() if drop_all else {normalize_capability(c) for c in drop}

        def change(caps: list[str]) -> list[str]:
            base = [] if drop_all else [c for c in caps if c not in drop_n]
            return base + [c for c in add_n if c not in base and c not in drop_n]
        return Capabilities(
            bounding=change(self.bounding), effective=change(self.effective),
            permitted=change(self.permitted),
            inheritable=[c for c in self.inheritable if c in change(self.permitted)],
            ambient=[c for c in self.ambient if c in change(self.permitted)])


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _env_dict(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        out: dict[str, str] = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"{item!r} is not KEY=VALUE")
            key, _, val = item.partition("=")
            out[key] = val
        return out
    return value


class Process(_Model):
    args: list[CString] = Field(default_factory=lambda: ["/bin/sh"], min_length=1)
    env: Annotated[dict[str, CString], BeforeValidator(_env_dict)] = Field(
        default_factory=lambda: {"PATH": DEFAULT_PATH},
        description="environment; a list of KEY=VALUE is accepted too")
    cwd: CString = "/"
    user: User = Field(default_factory=User)
    umask: int = Field(0o022, ge=0, le=0o777)
    terminal: bool = False
    stdin: bool = Field(False, description="keep stdin open (docker -i)")
    rlimits: list[Rlimit] = []
    capabilities: Capabilities = Field(default_factory=Capabilities)
    no_new_privileges: bool = True
    apparmor_profile: CString | None = Field(
        None, description="AppArmor profile; null: execdriver-default where the host has AppArmor, "
        "'unconfined': none")
    oom_score_adj: int | None = Field(None, ge=-1000, le=1000)
    preserve_fds: int = Field(0, ge=0, le=1024, description="extra fds 3..3+N-1 kept open")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"bad environment variable name {key!r}")
        return v

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path")
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        if not v[0]:
            raise ValueError("the command must not be empty")
        return v


# --- filesystem -------------------------------------------------------------

Propagation = Literal["private", "rprivate", "slave", "rslave", "shared", "rshared",
                      "unbindable", "runbindable"]


class Root(_Model):
    path: CString = Field(description="rootfs directory (relative paths are taken from the spec "
                                      "file's folder)")
    readonly: bool = False
    propagation: Propagation | None = Field(
        None, description="the root mount's propagation in the container (OCI "
                          "linux.rootfsPropagation); default: runc's, a slave of the host's")


class Mount(_Model):
    destination: CString
    type: CString = "bind"
    source: CString | None = None
    options: list[CString] = []

    @field_validator("destination")
    @classmethod
    def _dest(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path inside the container")
        if any(part == ".." for part in v.split("/")):
            raise ValueError("must not contain '..'")
        return v

    @model_validator(mode="after")
    def _source(self) -> Mount:
        if (self.type == "bind" or "bind" in self.options or "rbind" in self.options) \
                and not self.source:
            raise ValueError("a bind mount needs a source")
        from .kernel.mounts import option_problems  # lazy: the kernel's option tables
        problems = option_problems(self.type, self.options)
        if problems:
            raise ValueError(f"options: {'; '.join(problems)}")
        return self


def default_mounts() -> list[Mount]:
    return [
        Mount(destination="/proc", type="proc", source="proc", options=["nosuid", "noexec", "nodev"]),
        Mount(destination="/dev", type="tmpfs", source="tmpfs",
              options=["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount(destination="/dev/pts", type="devpts", source="devpts",
              options=["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        Mount(destination="/dev/shm", type="tmpfs", source="shm",  # noqa: S108 - in the container
              options=["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        Mount(destination="/dev/mqueue", type="mqueue", source="mqueue",
              options=["nosuid", "noexec", "nodev"]),
        Mount(destination="/sys", type="sysfs", source="sysfs",
              options=["nosuid", "noexec", "nodev", "ro"]),
        Mount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup",
              options=["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ]


DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",
]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# --- namespaces and id maps -----------------------------------------------

NamespaceType = Literal["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]
_NS_ALIASES = {"net": "network", "mnt": "mount"}


class Namespace(_Model):
    type: NamespaceType
    path: CString | None = Field(None, description="join this namespace instead of creating one")

    @field_validator("type", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return _NS_ALIASES.get(v, v) if isinstance(v, str) else v


def default_namespaces() -> list[Namespace]:
    return [Namespace(type=t) for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]


class IDMapping(_Model):
    container_id: int = Field(ge=0)
    host_id: int = Field(ge=0)
    size: int = Field(ge=1)


# --- resources --------------------------------------------------------------

class MemoryResources(_Model):
    limit: Size | None = None
    reservation: Size | None = None
    swap: Annotated[int, BeforeValidator(parse_size)] | None = Field(
        None, description="memory+swap limit; -1 for unlimited")
    swappiness: int | None = Field(
        None, ge=0, le=100, description="the kernel's swap tendency for this cgroup (cgroup v1 "
        "memory.swappiness; cgroup v2 has none: a warning there)")
    disable_oom_killer: bool = Field(
        False, description="at the limit, processes wait instead of being killed (cgroup v1 "
        "memory.oom_control; cgroup v2 has none: a warning there)")

    @field_validator("limit", "reservation")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("swap")
    @classmethod
    def _swap(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and v <= 0:
            raise ValueError("must be > 0 or -1")
        return v

    @model_validator(mode="after")
    def _order(self) -> MemoryResources:
        if self.limit and self.swap and self.swap != -1 and self.swap < self.limit:
            raise ValueError("swap (memory+swap) must be >= limit")
        return self


_CPUSET_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
MIN_CPU_QUOTA, MAX_CPU_QUOTA = 1000, (1 << 44) - 1   # microseconds: the kernel's range


class CPUResources(_Model):
    shares: int | None = Field(None, ge=2, le=262144)
    quota: int | None = Field(None, ge=MIN_CPU_QUOTA, description="microseconds per period")
    period: int | None = Field(None, ge=1000, le=1000000)
    cpus: str | None = Field(None, description="cpuset, e.g. 0-1")
    mems: str | None = None

    @field_validator("quota")
    @classmethod
    def _quota(cls, v: int | None) -> int | None:
        if v is not None and v > MAX_CPU_QUOTA:
            raise ValueError(f"at most {MAX_CPU_QUOTA} (the kernel's limit)")
        return v

    @field_validator("cpus", "mems")
    @classmethod
    def _cpuset(cls, v: str | None) -> str | None:
        if v is not None and not _CPUSET_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a cpu list like 0-1,3")
        return v


class PidsResources(_Model):
    limit: int | None = Field(None, ge=1)


class BlockIOResources(_Model):
    weight: int | None = Field(None, ge=10, le=1000)


class DeviceRule(_Model):
    allow: bool
    type: Literal["a", "c", "b"] = "a"
    major: int | None = Field(None, ge=0)
    minor: int | None = Field(None, ge=0)
    access: str = "rwm"

    @field_validator("access")
    @classmethod
    def _access(cls, v: str) -> str:
        if not v or set(v) - set("rwm"):
            raise ValueError("must be a combination of r, w, m")
        return v


DEVICE_TYPES = {"c": "character", "u": "character (unbuffered)", "b": "block", "p": "fifo"}
MAX_MAJOR, MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1      # the kernel's dev_t: 12 + 20 bits


class Device(_Model):
    """A device node created in the container (OCI linux.devices)."""

    path: CString = Field(description="where in the container, e.g. /dev/fuse")
    type: Literal["c", "b", "u", "p"] = Field(description="c (character), u (unbuffered "
                                                          "character), b (block), p (fifo)")
    major: int | None = Field(None, ge=0, le=MAX_MAJOR, description="required but for p")
    minor: int | None = Field(None, ge=0, le=MAX_MINOR, description="required but for p")
    file_mode: int = Field(0o666, ge=0, le=0o7777, description="permission bits (438 is 0o666)")
    uid: int = Field(0, ge=0, lt=2**32 - 1, description="owner, as seen in the container")
    gid: int = Field(0, ge=0, lt=2**32 - 1, description="group, as seen in the container")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path inside the container")
        parts = [p for p in v.split("/") if p]
        if not parts:
            raise ValueError("must name a file, not /")
        if ".." in parts:
            raise ValueError("must not contain '..'")
        return "/" + "/".join(p for p in parts if p != ".")

    @model_validator(mode="after")
    def _numbers(self) -> Device:
        if self.type != "p" and (self.major is None or self.minor is None):
            raise ValueError(f"a {DEVICE_TYPES[self.type]} device needs major and minor")
        return self


class Resources(_Model):
    memory: MemoryResources = Field(default_factory=MemoryResources)
    cpu: CPUResources = Field(default_factory=CPUResources)
    pids: PidsResources = Field(default_factory=PidsResources)
    block_io: BlockIOResources = Field(default_factory=BlockIOResources)
    devices: list[DeviceRule] = Field(
        default_factory=list,
        description="extra rules after the default deny-all plus the standard allow list")

    def is_empty(self) -> bool:
        return self == Resources()


# --- network ----------------------------------------------------------------

class PortMapping(_Model):
    host_ip: str = "0.0.0.0"
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        """``[hostip:]hostport:containerport[/proto]``."""
        proto = "tcp"
        if "/" in text:
            text, proto = text.rsplit("/", 1)
        parts = text.rsplit(":", 2)
        try:
            if len(parts) == 3:
                return cls(host_ip=parts[0], host_port=int(parts[1]),
                           container_port=int(parts[2]), protocol=proto)  # type: ignore[arg-type]
            if len(parts) == 2:
                return cls(host_port=int(parts[0]), container_port=int(parts[1]),
                           protocol=proto)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"bad port mapping {text!r}: {exc}") from None
        raise ValueError(f"bad port mapping {text!r} (want [hostip:]hostport:containerport[/tcp|udp])")


class Route(_Model):
    destination: str
    gateway: str | None = None


class Network(_Model):
    mode: Literal["none", "host", "bridge", "container", "netns", "slirp4netns"] = "none"
    container: CString | None = Field(None, description="with mode container: the id whose netns to join")
    netns_path: CString | None = Field(None, description="with mode netns: a namespace file to join")
    bridge: CString = Field("execdriver0", max_length=15)
    subnet: str = "10.88.0.0/16"
    addresses: list[str] = Field(default_factory=list, description="static CIDR addresses for eth0")
    gateway: str | None = None
    mtu: int | None = Field(None, ge=68, le=65535)
    routes: list[Route] = []
    ports: list[PortMapping] = []
    dns: list[CString] = []
    isolate: bool = Field(False, description="block traffic to other containers on the bridge")
    host_loopback: bool = Field(False, description="slirp4netns: the host's 127.0.0.1 is "
                                "reachable as 10.0.2.2")

    @model_validator(mode="after")
    def _mode_args(self) -> Network:
        if self.mode == "container" and not self.container:
            raise ValueError("mode container needs 'container'")
        if self.mode == "netns" and not self.netns_path:
            raise ValueError("mode netns needs 'netns_path'")
        if self.ports and self.mode != "bridge":
            raise ValueError("published ports need mode bridge")
        return self


# --- security profiles, hooks ----------------------------------------------

SeccompAction = Literal["allow", "errno", "kill", "kill_process", "trap", "log", "trace"]


class SeccompArg(_Model):
    index: int = Field(ge=0, le=5)
    value: int = Field(ge=0)
    value_two: int = Field(0, ge=0)
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "masked_eq"] = "eq"


class SeccompRule(_Model):
    names: list[str] = Field(min_length=1)
    action: SeccompAction = "allow"
    errno: int | None = Field(None, ge=0, le=4095)
    args: list[SeccompArg] = []


class SeccompProfile(_Model):
    default_action: SeccompAction = "errno"
    default_errno: int = Field(1, ge=0, le=4095)
    syscalls: list[SeccompRule] = []


class Seccomp(_Model):
    mode: Literal["default", "unconfined", "profile"] = "default"
    profile: SeccompProfile | None = None

    @field_validator("profile")
    @classmethod
    def _known_syscalls(cls, v: SeccompProfile | None) -> SeccompProfile | None:
        # Checked here, not in SeccompRule: the compiler takes bare profiles and
        # refuses unknown names itself; a container's profile must be refused
        # before create. Names of other ABIs are known (skipped when compiling).
        if v is None or not v.syscalls:
            return v
        from .kernel.syscall_table import ALL_NAMES  # lazy: a big table
        unknown = [f"{name!r} (syscalls[{i}].names)" for i, rule in enumerate(v.syscalls)
                   for name in rule.names if name not in ALL_NAMES]
        if unknown:
            raise ValueError(f"unknown syscall{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _profile(self) -> Seccomp:
        if self.mode == "profile" and self.profile is None:
            raise ValueError("mode profile needs 'profile'")
        return self


class Hook(_Model):
    path: CString
    args: list[CString] = []
    env: list[CString] = []
    timeout: int | None = Field(None, ge=1)


class Hooks(_Model):
    prestart: list[Hook] = []
    create_runtime: list[Hook] = []
    create_container: list[Hook] = []
    start_container: list[Hook] = []
    poststart: list[Hook] = []
    poststop: list[Hook] = []

    def is_empty(self) -> bool:
        return self == Hooks()


_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")


class Spec(_Model):
    """A container, as every driver sees it."""

    version: str = SPEC_VERSION
    root: Root
    process: Process = Field(default_factory=Process)
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] = Field(default_factory=default_mounts)
    namespaces: list[Namespace] = Field(default_factory=default_namespaces)
    uid_mappings: list[IDMapping] = []
    gid_mappings: list[IDMapping] = []
    resources: Resources = Field(default_factory=Resources)
    devices: list[Device] = Field(
        default_factory=list,
        description="device nodes to create; each is also allowed (rwm) in the device "
                    "cgroup, after resources.devices, unless one of those rules names its type "
                    "and number (that rule decides)")
    network: Network = Field(default_factory=Network)
    seccomp: Seccomp = Field(default_factory=Seccomp)
    masked_paths: list[CString] = Field(default_factory=lambda: list(DEFAULT_MASKED_PATHS))
    readonly_paths: list[CString] = Field(default_factory=lambda: list(DEFAULT_READONLY_PATHS))
    sysctls: dict[str, CString] = {}
    hooks: Hooks = Field(default_factory=Hooks)
    annotations: dict[str, str] = {}

    @field_validator("hostname", "domainname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not _HOSTNAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid host name")
        return v

    @field_validator("namespaces")
    @classmethod
    def _ns_unique(cls, v: list[Namespace]) -> list[Namespace]:
        seen = [n.type for n in v]
        dups = {t for t in seen if seen.count(t) > 1}
        if dups:
            raise ValueError(f"namespace listed twice: {', '.join(sorted(dups))}")
        return v

    @field_validator("masked_paths", "readonly_paths")
    @classmethod
    def _abs_paths(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} must be an absolute path")
        return v

    @field_validator("devices")
    @classmethod
    def _devices_unique(cls, v: list[Device]) -> list[Device]:
        paths = [d.path for d in v]
        dups = sorted({p for p in paths if paths.count(p) > 1})
        if dups:
            raise ValueError(f"device path listed twice: {', '.join(dups)}")
        return v

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[a-z0-9_.\-/]+", key) or ".." in key:
                raise ValueError(f"bad sysctl name {key!r}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> Spec:
        types = self.namespace_types()
        if (self.uid_mappings or self.gid_mappings) and "user" not in types:
            raise ValueError("uid/gid mappings need a user namespace")
        if "user" in types and not self.namespace_path("user") and not (
                self.uid_mappings and self.gid_mappings):
            raise ValueError("a new user namespace needs uid_mappings and gid_mappings")
        if self.namespace_path("mount") and "user" in types and not self.namespace_path("user"):
            raise ValueError("joining a mount namespace needs the user namespace that owns it: "
                             "join that one by path too, or create no user namespace")
        if self.hostname and "uts" not in types:
            raise ValueError("setting hostname needs a uts namespace")
        net_ns = "network" in types
        if self.network.mode == "host" and net_ns:
            raise ValueError("network mode host cannot have a network namespace")
        if self.network.mode in ("none", "bridge", "container", "netns", "slirp4netns") \
                and not net_ns:
            raise ValueError(f"network mode {self.network.mode} needs a network namespace")
        if self.network.mode in ("none", "bridge", "slirp4netns") \
                and self.namespace_path("network"):
            raise ValueError(f"network mode {self.network.mode} creates its own network namespace: "
                             "use mode netns to join one")
        return self

    # -- helpers ------------------------------------------------------------
    def namespace_types(self) -> set[str]:
        return {n.type for n in self.namespaces}

    def namespace_path(self, ns_type: str) -> str | None:
        for n in self.namespaces:
            if n.type == ns_type:
                return n.path
        return None


# --- features ---------------------------------------------------------------

from .features import ALL_FEATURES  # noqa: E402,F401 - re-exported


def features_used(spec: Spec) -> set[str]:
    """The features a spec asks for, in the vocabulary of ALL_FEATURES."""
    used = {f"namespaces.{t}" for t in spec.namespace_types()}
    if any(n.path for n in spec.namespaces):
        used.add("namespaces.join")
    if spec.root.readonly:
        used.add("root.readonly")
    if spec.mounts:
        used.add("mounts")
    if spec.hostname:
        used.add("hostname")
    if spec.domainname:
        used.add("domainname")
    p = spec.process
    if p.user != User():
        used.add("process.user")
    if p.rlimits:
        used.add("process.rlimits")
    used.add("process.capabilities")
    if p.no_new_privileges:
        used.add("process.no_new_privileges")
    if p.apparmor_profile and p.apparmor_profile != "unconfined":   # unconfined asks for nothing
        used.add("process.apparmor")
    if p.oom_score_adj is not None:
        used.add("process.oom_score_adj")
    if p.terminal:
        used.add("process.terminal")
    if p.preserve_fds:
        used.add("process.preserve_fds")
    r = spec.resources
    if r.memory != MemoryResources():
        used.add("resources.memory")
    if r.cpu.shares or r.cpu.quota or r.cpu.period:
        used.add("resources.cpu")
    if r.cpu.cpus or r.cpu.mems:
        used.add("resources.cpuset")
    if r.pids.limit:
        used.add("resources.pids")
    if r.block_io.weight:
        used.add("resources.block_io")
    if r.devices:
        used.add("resources.devices")
    if spec.devices:
        used.add("devices")
    used.add(f"network.{spec.network.mode}")
    if spec.network.ports:
        used.add("network.ports")
    if spec.seccomp.mode == "default":
        used.add("seccomp.default")
    elif spec.seccomp.mode == "profile":
        used.add("seccomp.profile")
    if spec.masked_paths:
        used.add("masked_paths")
    if spec.readonly_paths:
        used.add("readonly_paths")
    if spec.sysctls:
        used.add("sysctls")
    if not spec.hooks.is_empty():
        used.add("hooks")
    if spec.uid_mappings or spec.gid_mappings:
        used.add("idmap")
    return used


# --- loading ----------------------------------------------------------------

def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith("function-") or part in (
                "list[str]", "int", "str", "constrained-int")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "spec"


def problems_from(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required"
        loc = _loc(err["loc"])
        lines.append(msg if loc == "spec" else f"{loc}: {msg}")
    return lines


def validate_spec(data: Any) -> Spec:
    """Validate a dict (or a Spec) into a Spec; raise SpecError with one line per problem."""
    if isinstance(data, Spec):
        return data
    if not isinstance(data, dict):
        raise SpecError(["spec: must be a JSON object"])
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from(exc)) from None


#: id(spec) -> (a weak reference to it, its dump when it last validated): a spec run
#: again unchanged (a job runner's loop) is not validated again
_VALIDATED: dict[int, tuple[Any, dict[str, Any]]] = {}


def revalidate(spec: Spec) -> Spec:
    """Validate a possibly mutated Spec again, as a whole (SpecError on problems)."""
    import weakref
    dump = spec.model_dump()
    key = id(spec)
    seen = _VALIDATED.get(key)
    if seen is not None and seen[0]() is spec and seen[1] == dump:
        return spec
    try:
        checked = Spec.model_validate(dump)
    except ValidationError as exc:
        raise SpecError(problems_from(exc)) from None
    def forget(_: object) -> None:
        _VALIDATED.pop(key, None)
    _VALIDATED[key] = (weakref.ref(spec, forget), dump)
    return checked


def load_spec(path: str | Path) -> Spec:
    """Read a spec from a JSON file; a relative root.path is taken from the file's folder."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise SpecError([f"spec file {p}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"spec file {p}: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise SpecError([f"spec file {p}: not JSON ({exc.msg} at line {exc.lineno})"]) from None
    spec = validate_spec(data)
    if not Path(spec.root.path).is_absolute():
        spec.root.path = str((p.parent / spec.root.path).resolve())
    return spec


def json_schema() -> dict[str, Any]:
    return Spec.model_json_schema()
