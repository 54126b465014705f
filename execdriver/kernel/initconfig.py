"""Everything the container init needs, computed in the parent before fork.

The init is a forked copy of the runtime; it gets this object through the
fork (no serialisation) and only makes syscalls with it: no pydantic, no
imports, no compilation after fork. The input is the plain-data Config
(execdriver.config), never the pydantic spec. The slow parts (seccomp compilation,
capability masks, mount option parsing) happen here, once, in the parent.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence

from ..errors import StepFailed
from . import apparmor, capabilities, devices, mounts, rlimits, seccomp
from . import syscalls as sc
from .record import field, record

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

    from ..config import Config, Process


@record
class ProcessConfig:
    """The part shared by a container's init and an exec'd process."""

    args: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    additional_gids: list[int]
    umask: int
    cap_plan: Any
    no_new_privileges: bool
    seccomp_filter: Any
    rlimits: list[tuple[int, int, int]]
    terminal: bool = False
    preserve_fds: int = 0
    oom_score_adj: int | None = None
    apparmor_profile: str | None = None
    die_with_parent: bool = False       # re-arm PDEATHSIG after the uid change
    parent_pid: int = 0
    # past a created container's start gate nobody reads the sync socket (unless the
    # creator starts it: InitConfig.exec_heard): a failure is also written to the
    # process's stderr (its log), as one line
    errors_to_stderr: bool = False


@record
class InitConfig:
    container_id: str
    rootfs: str
    root_mode: str                      # a RootMode's value ("pivot", "move", "chroot")
    process: ProcessConfig
    unshare_flags: int = 0              # every new namespace except user
    new_userns: bool = False
    join: list[tuple[int, str]] = field(default_factory=list)   # (flag, path), user first
    # A mount namespace joined by path: the init joins it (stage-1, the monitor, keeps the
    # host's: pivot_root there moves the root of every process whose root was the old one),
    # and sets the rootfs up in it as in a new one (runc's behaviour).
    join_mount: str | None = None
    join_mount_fd: int = -1             # opened by stage-1 before any namespace changes

    @property
    def own_mount_ns(self) -> bool:
        """Whether the init sets the rootfs up in a mount namespace of its own (new or joined)."""
        return bool(self.unshare_flags & sc.CLONE_NEWNS) or self.join_mount is not None
    uid_map: str = ""
    gid_map: str = ""
    cgroup_procs: list[str] = field(default_factory=list)
    # the cgroup is made with the init in it, after the fork (systemd's scope): the init
    # makes its cgroup namespace after that, as after joining cgroup_procs
    cgroup_placed_later: bool = False
    readonly_root: bool = False
    # "/" in the new mount namespace before the rootfs is set up: runc's rslave by default
    # (host mounts still reach the container; nothing goes back), rprivate when asked.
    root_propagation: int = sc.MS_SLAVE | sc.MS_REC
    root_propagation_final: int = 0     # the spec's, applied to the new "/" after pivot_root
    mounts: list[mounts.MountPlan] = field(default_factory=list)
    cgroup_mount: str | None = None
    cgroup_binds: list[tuple[str, str]] = field(default_factory=list)   # (subdir, host dir)
    populate_dev: bool = False
    exec_heard: bool = False            # the creator reads the sync socket after start
    dev_core: bool = True               # /dev/core -> /proc/kcore (as runc: only if it exists)
    devices: list[devices.DeviceNode] = field(default_factory=list)
    devices_by_bind: bool = False       # in a user namespace: bind the host's nodes
    extra_binds: list[tuple[str, str]] = field(default_factory=list)   # (dest, host file)
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    hostname: str | None = None
    domainname: str | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    exec_fifo: str | None = None
    exit_file: str | None = None
    detach: bool = False
    loopback_up: bool = False
    waiter: str | None = None           # compiled monitor (waiter.c), if built
    # Stop after the rootfs mounts, before pivot_root, and wait for the parent
    # (it runs the OCI createContainer hooks in the container's mount namespace).
    pause_before_pivot: bool = False


NS_GET_NSTYPE = 0xB703      # ioctl on a namespace file: its CLONE_NEW* type


def check_namespace_file(ns_type: str, path: str) -> None:
    """A path to join must be a namespace file of that type, and a mount namespace
    not the runtime's own: the rootfs set-up in it would change the host's mounts."""
    def fail(why: str, err: int | None = None) -> StepFailed:
        return StepFailed("namespace", why, errno=err, type=ns_type, path=path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise fail(exc.strerror or str(exc), exc.errno) from None
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = None
        if kind != sc.NS_FLAGS[ns_type]:
            raise fail(f"not a {ns_type} namespace file")
        if ns_type == "mount":
            own = os.stat(f"/proc/self/ns/{sc.NS_PROC_NAMES['mount']}")
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                raise fail("the runtime's own mount namespace (the host's): the rootfs "
                           "would be set up in it")
    finally:
        os.close(fd)


def _idmap(mappings: Sequence[Any]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def process_config(proc: Process, in_userns: bool = False) -> ProcessConfig:
    """``proc`` for stage-1 or an exec helper; ``in_userns``: in a user namespace of the
    container's (new or joined)."""
    env = dict(proc.env)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOME", "/root" if proc.user.uid == 0 else "/")
    if proc.terminal:
        env.setdefault("TERM", "xterm")
    return ProcessConfig(
        args=list(proc.args), env=[f"{k}={v}" for k, v in env.items()], cwd=proc.cwd,
        uid=proc.user.uid, gid=proc.user.gid, additional_gids=list(proc.user.additional_gids),
        umask=proc.umask, cap_plan=capabilities.prepare(proc.capabilities, in_userns=in_userns),
        no_new_privileges=proc.no_new_privileges, seccomp_filter=None,
        rlimits=rlimits.prepare(proc.rlimits), terminal=proc.terminal,
        preserve_fds=proc.preserve_fds, oom_score_adj=proc.oom_score_adj,
        apparmor_profile=apparmor.plan(proc.apparmor_profile))


def build(container_id: str, spec: Config, *,
          cgroup_procs: list[str] | None = None,
          cgroup_dirs: dict[str, str] | None = None,
          extra_binds: list[tuple[str, str]] | None = None, exec_fifo: str | None = None,
          exit_file: str | None = None, detach: bool = False) -> InitConfig:
    """Translate a Config into an InitConfig (pure apart from host checks)."""
    from ..config import RootMode
    root_mode = RootMode(spec.root_mode).value   # ValueError for a mode that does not exist
    root = os.path.realpath(spec.root.path)
    if not os.path.isdir(root):
        raise StepFailed("rootfs", "not a directory" if os.path.exists(root)
                         else "no such directory", path=spec.root.path)
    proc = process_config(spec.process, in_userns="user" in spec.namespace_types())
    proc.seccomp_filter = seccomp.prepare(spec.seccomp)
    cfg = InitConfig(container_id=container_id, rootfs=root, root_mode=root_mode, process=proc,
                     cgroup_procs=list(cgroup_procs or []),
                     readonly_root=spec.root.readonly,
                     extra_binds=list(extra_binds or []), masked_paths=list(spec.masked_paths),
                     readonly_paths=list(spec.readonly_paths), hostname=spec.hostname,
                     domainname=spec.domainname, sysctls=dict(spec.sysctls),
                     exec_fifo=exec_fifo, exit_file=exit_file, detach=detach)
    if spec.root.propagation:
        flags = mounts.propagation_flags(spec.root.propagation)
        if flags & sc.MS_PRIVATE:
            cfg.root_propagation = flags
        # (shared is applied to the new root only: set on the host's copy of "/" it would
        # let the container's mounts reach the host)
        cfg.root_propagation_final = flags
    for ns in spec.namespaces:
        flag = sc.NS_FLAGS[ns.type]
        if ns.path:
            check_namespace_file(ns.type, ns.path)
            entry = (flag, ns.path)
            if ns.type == "mount":
                cfg.join_mount = ns.path
            elif ns.type == "user":
                cfg.join.insert(0, entry)
            else:
                cfg.join.append(entry)
        elif ns.type == "user":
            cfg.new_userns = True
        else:
            cfg.unshare_flags |= flag
    from . import waiter
    cfg.waiter = waiter.find()
    cfg.loopback_up = (bool(cfg.unshare_flags & sc.CLONE_NEWNET)
                       and spec.network.mode in ("none", "slirp4netns"))
    cfg.uid_map, cfg.gid_map = _idmap(spec.uid_mappings), _idmap(spec.gid_mappings)
    from .procstat import running_in_userns
    # (ours may be one already: rootless podman runs its runtime as root in its own)
    in_userns = (cfg.new_userns or any(flag == sc.CLONE_NEWUSER for flag, _ in cfg.join)
                 or running_in_userns())
    for m in spec.mounts:
        if m.type == "cgroup":
            cfg.cgroup_mount = m.destination
            cfg.cgroup_binds = sorted((cgroup_dirs or {}).items())
            continue
        if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            assert m.source
            if not os.path.exists(m.source):
                raise StepFailed("mount", "source does not exist", destination=m.destination,
                                 source=m.source)
        plan = mounts.plan_mount(m.destination, m.type, m.source, m.options)
        if plan.fstype == "sysfs" and not (cfg.unshare_flags & sc.CLONE_NEWNET) and in_userns:
            # In a user namespace sysfs can only be mounted in a netns that namespace owns:
            # bind the host's, read-only. (Real root mounts a fresh one, as runc does, also
            # in the host's netns: a bind would show the host's cgroup tree under it.)
            plan = mounts.plan_mount(m.destination, "bind", "/sys", ["rbind", "ro", "nosuid",
                                                                     "noexec", "nodev"])
        cfg.mounts.append(plan)
        if m.destination == "/dev" and m.type == "tmpfs":
            cfg.populate_dev = True
            cfg.dev_core = os.path.exists("/proc/kcore")
    cfg.devices_by_bind = in_userns
    cfg.devices = devices.plan_devices(spec.devices, cfg.devices_by_bind)
    for path in list(cfg.sysctls):
        if not os.path.exists("/proc/sys/" + path.replace(".", "/")):
            raise StepFailed("sysctl", "unknown on this kernel", name=path)
    return cfg
