"""Spec -> LXC configuration: pure functions, no liblxc, no host access.

:func:`spec_to_config` gives the ``(key, value)`` items of ``<lxcpath>/<id>/config``
in order (LXC applies list keys such as mount entries and cgroup writes in the
order given). :func:`unsupported` names, before anything is created, what a spec
asks for that LXC cannot express; :data:`UNSUPPORTED` says why for whole features.
:func:`seccomp_profile` writes the spec's seccomp section in LXC's profile format.

Choices worth knowing:

- The command runs as the container's init (``lxc.init.cmd``, pid 1), as in the
  native driver. ``/dev`` is not LXC's autodev: the spec's tmpfs is mounted as
  given and the standard nodes are bind-mounted from the host, so the mount
  options are the spec's. devpts is a plain mount entry too (``lxc.pty.max=0``).
- Masked paths: ``/dev/null`` is bound over a file, a read-only tmpfs over a
  directory; each entry is ``optional`` and the one that fits the path wins.
- A read-only root is a bind remount done by the last ``lxc.hook.mount``, after
  every mount target was created (``lxc.rootfs.options=ro`` would make LXC fail
  to create them).
- The container's cgroups get names derived from the id and the lxcpath, so they
  are known before start (recorded for cleanup) and two state roots never clash.
- Hooks: prestart and create_runtime run as ``start-host``, which liblxc runs
  *after* the ``mount`` hooks (create_container); poststart has no LXC hook.
- liblxc always adds ``container=lxc`` to the init's environment.
- The cwd (CVE-2024-21626): liblxc's init chdir()s while it holds host directories, so
  paths.cwd_problem refuses, before anything exists, a cwd that goes through /proc and
  its kin (symlinks resolved inside the rootfs), and the first start-host hook
  (:func:`cwd_check_hook`) checks, after that chdir and before the exec, that the init's
  cwd is reachable from its root.
- Mount targets are the destinations resolved in the rootfs (paths.mount_targets), made by
  the driver (paths.make_targets): an entry says ``create=`` only for a target inside a
  tmpfs of the spec, which liblxc mounts empty (liblxc's own creation follows the image's
  symlinks on the host). Masked and read-only paths are resolved the same way.
- Every cgroup mount is read-only, whatever the spec's options (as in the native driver,
  CVE-2023-25809): ``cgroup:ro`` makes the hierarchies read-only, a mount hook the tmpfs
  liblxc mounts them in.
"""

from __future__ import annotations

import errno as _errno
import hashlib
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from execdriver.spec import CAP_NUMBERS, DEFAULT_PATH, Mount, Process, SeccompArg, SeccompProfile, Spec

from .monitor import CWD_REFUSED
from .paths import (
    MountTarget,
    Readlink,
    binding,
    mount_targets,
    rel,
    resolve_paths,
    target_is_dir,
)

if TYPE_CHECKING:
    from execdriver import config

# LXC's names for namespaces (the /proc/PID/ns entries).
NS_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
            "user": "user", "cgroup": "cgroup", "time": "time"}

# Whole features the driver does not declare, and why (shown by docs and reports).
UNSUPPORTED = {
    "process.terminal": "no console/pty allocation for the init yet (lxc.console is 'none')",
    "process.preserve_fds": "liblxc closes every inherited descriptor but 0-2 when starting",
    "network.bridge": "veth on our bridge is left to the networking work",
    "network.container": "joining another container's network is left to the networking work",
    "network.netns": "joining a network namespace file is left to the networking work",
    "network.ports": "published ports need network mode bridge",
    "network.slirp4netns": "user-mode networking (slirp4netns) is left to the networking work",
    "devices": "extra device nodes are not translated to LXC keys (lxc.mount.entry, cgroup "
               "rules) yet",
    "checkpoint": "lxc-checkpoint drives its own CRIU: not wired to execdriver's state yet",
}

PIVOT_CGROUP = "execdriver-lxc-pivot"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
MOUNT_BINARY = "/bin/mount"
# cap.keep names LXC 5.0 knows; newer capabilities are given by number.
_LAST_NAMED_CAP = CAP_NUMBERS["CAP_AUDIT_READ"]
_SYSCTL_IPC = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
               "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
_SYSCTL_UTS = {"kernel.hostname", "kernel.domainname"}
_SECCOMP_OPS = {"eq": "SCMP_CMP_EQ", "ne": "SCMP_CMP_NE", "lt": "SCMP_CMP_LT",
                "le": "SCMP_CMP_LE", "gt": "SCMP_CMP_GT", "ge": "SCMP_CMP_GE",
                "masked_eq": "SCMP_CMP_MASKED_EQ"}
_SECCOMP_ACTIONS = {"allow", "errno", "kill", "trap"}


def _no_link(_path: str) -> str | None:
    return None


@dataclass(frozen=True)
class HostFacts:
    """What :func:`unsupported` needs to know about the host (gathered by the driver)."""

    cgroup_version: int = 1
    memsw: bool = True          # memory.memsw.* exists (swap accounting on v1)
    io_weight: bool = False     # blkio.weight (v1) / io.weight (v2) exists
    apparmor: bool = False      # AppArmor enabled
    # With newuidmap/newgidmap installed liblxc maps ids through them, even for root, so
    # the host ranges must be delegated to root in /etc/subuid and /etc/subgid. None: no
    # such tool, root writes the maps itself and any range goes.
    subuid: tuple[tuple[int, int], ...] | None = None
    subgid: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class CgroupNames:
    container: str
    monitor: str
    pivot: str = PIVOT_CGROUP


def cgroup_names(container_id: str, lxcpath: str) -> CgroupNames:
    """Cgroup names (relative to each hierarchy's root) for this container and its monitor."""
    h = hashlib.sha256(f"{lxcpath}\0{container_id}".encode()).hexdigest()[:10]
    return CgroupNames(f"execdriver-lxc.{container_id}.{h}",
                       f"execdriver-lxc-monitor.{container_id}.{h}")


# --- small encoders --------------------------------------------------------

def fstab_escape(field: str) -> str:
    """Escape a mount entry field the way getmntent(3) decodes it."""
    return (field.replace("\\", "\\134").replace(" ", "\\040")
            .replace("\t", "\\011").replace("\n", "\\012"))


def init_cmd_word(arg: str) -> str | None:
    """One argument as lxc.init.cmd's splitter reads it, or None if it cannot be."""
    if arg and not any(c in " \t\n\v\f\r" for c in arg) and arg[0] not in "'\"":
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    return None


def cap_token(cap: str) -> str:
    num = CAP_NUMBERS[cap]
    return cap.removeprefix("CAP_").lower() if num <= _LAST_NAMED_CAP else str(num)


def rlimit_value(n: int) -> str:
    return "unlimited" if n >= 2**64 - 1 else str(n)


def process_env(p: Process) -> dict[str, str]:
    """The spec's environment plus PATH and HOME when it has none (as the native driver
    does: liblxc adds only ``container=lxc``)."""
    env = dict(p.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/root" if p.user.uid == 0 else "/")
    return env


# --- what LXC cannot express -------------------------------------------------

def _sysctl_problem(name: str, spec: Spec) -> str | None:
    if "/" in name and "." in name:
        return f"sysctls: {name!r} mixes '/' and '.'"
    dotted = name.replace("/", ".")
    if dotted in _SYSCTL_IPC or dotted.startswith("fs.mqueue."):
        need = "ipc"
    elif dotted in _SYSCTL_UTS:
        need = "uts"
    elif dotted.startswith("net."):
        need = "network"
    else:
        return f"sysctls: {name} is not namespaced (LXC would change it on the host)"
    if need not in spec.namespace_types() or spec.namespace_path(need):
        return f"sysctls: {name} needs a new {need} namespace"
    return None


def _seccomp_problems(profile: SeccompProfile) -> list[str]:
    out = []
    if profile.default_action not in _SECCOMP_ACTIONS:
        out.append(f"seccomp.profile.default_action: LXC has no action {profile.default_action!r}")
    for i, rule in enumerate(profile.syscalls):
        if rule.action not in _SECCOMP_ACTIONS:
            out.append(f"seccomp.profile.syscalls[{i}]: LXC has no action {rule.action!r}")
        if len({a.index for a in rule.args}) != len(rule.args):
            out.append(f"seccomp.profile.syscalls[{i}]: two conditions on one argument")
        if rule.args and _action(rule.action, rule.errno) == ENOSYS_ACTION:
            out.append(f"seccomp.profile.syscalls[{i}]: LXC cannot answer ENOSYS under a "
                       "condition (it is the default action of its profile, for syscalls "
                       "newer than the table, and libseccomp takes no rule with it)")
    return out


def capability_problems(p: Process) -> list[str]:
    """LXC sets only the bounding set: uid 0 then has it all effective, others none."""
    caps = p.capabilities
    out = []
    if caps.inheritable:
        out.append("process.capabilities.inheritable: LXC leaves the inheritable set empty")
    if caps.ambient:
        out.append("process.capabilities.ambient: LXC clears the ambient set")
    if p.user.uid == 0 and not (set(caps.effective) == set(caps.permitted) == set(caps.bounding)):
        out.append("process.capabilities: LXC gives uid 0 effective = permitted = bounding")
    if p.user.uid != 0 and (caps.effective or caps.permitted):
        out.append("process.capabilities: LXC gives a non-root process no effective or "
                   "permitted capabilities (clear them, keep the bounding set)")
    return out


def unsupported(spec: Spec, host: HostFacts = HostFacts()) -> list[str]:
    """Everything in ``spec`` LXC cannot express (empty when it can run it faithfully)."""
    out: list[str] = []
    types = spec.namespace_types()
    if "mount" not in types or spec.namespace_path("mount"):
        out.append("namespaces.mount: LXC always creates its own mount namespace")
    for ns in spec.namespaces:
        if ns.path and not ns.path.startswith("/"):
            out.append(f"namespaces.{ns.type}: path must be absolute")
    p = spec.process
    out += capability_problems(p)
    if p.apparmor_profile not in (None, "unconfined") and not host.apparmor:
        out.append("process.apparmor: AppArmor is not enabled on this host")
    if spec.sysctls or spec.domainname:
        for name in spec.sysctls:
            problem = _sysctl_problem(name, spec)
            if problem:
                out.append(problem)
        if any(r in ("/proc", "/proc/sys") for r in map(os.path.normpath, spec.readonly_paths)):
            out.append("sysctls: LXC writes sysctls after the mounts, so /proc/sys must not be "
                       "in readonly_paths")
    for i, m in enumerate(spec.mounts):
        problem = _mount_problem(m)
        if problem:
            out.append(f"mounts[{i}]: {problem}")
    for kind, maps, allowed in (("uid", spec.uid_mappings, host.subuid),
                                ("gid", spec.gid_mappings, host.subgid)):
        for idm in maps:
            if allowed is not None and not any(
                    start <= idm.host_id and idm.host_id + idm.size <= start + n
                    for start, n in allowed):
                out.append(f"idmap: liblxc maps ids with new{kind}map here, so host {kind}s "
                           f"{idm.host_id}-{idm.host_id + idm.size - 1} must be delegated to "
                           f"root in /etc/sub{kind}")
    r = spec.resources
    if r.memory.swap is not None and host.cgroup_version == 1 and not host.memsw:
        out.append("resources.memory.swap: no swap accounting (memory.memsw) on this host")
    if r.block_io.weight and not host.io_weight:
        out.append("resources.block_io: the io weight file is missing on this host")
    if host.cgroup_version == 2 and any(not d.allow for d in r.devices):
        out.append("resources.devices: LXC ignores deny rules in a cgroup2 allowlist")
    net = spec.network
    if net.mode in ("none", "host") and (net.addresses or net.routes or net.dns or net.gateway
                                         or net.mtu or net.isolate):
        out.append(f"network: addresses, routes, dns, gateway, mtu and isolate need mode bridge "
                   f"(mode is {net.mode})")
    if spec.seccomp.mode == "profile" and spec.seccomp.profile is not None:
        out += _seccomp_problems(spec.seccomp.profile)
    h = spec.hooks
    if h.poststart:
        out.append("hooks.poststart: LXC has no hook after the init is started")
    for i, hook in enumerate(h.start_container):
        if hook.args[1:] or hook.env or hook.timeout:
            out.append(f"hooks.start_container[{i}]: LXC runs start hooks by path only "
                       "(no args, env or timeout)")
    for item in _config_values(spec):
        if any(c in item for c in "\n\r\0"):
            out.append(f"a value with a newline or NUL cannot go into an LXC config: {item[:40]!r}")
            break
    return out


def _mount_problem(m: Mount) -> str | None:
    dest = os.path.normpath(m.destination)
    if dest == "/":
        return "LXC cannot mount over the root"
    if m.type in ("cgroup", "cgroup2") and dest != "/sys/fs/cgroup":
        return "LXC mounts cgroups only at /sys/fs/cgroup"
    if binding(m) and m.source and not m.source.startswith("/"):
        return "a bind source must be an absolute host path"
    if any("," in o for o in m.options):
        return "a mount option must not contain ','"
    return None


def _config_values(spec: Spec) -> list[str]:
    p = spec.process
    return ([spec.root.path, p.cwd, *(f"{k}={v}" for k, v in p.env.items())]
            + [m.destination for m in spec.mounts] + [m.source or "" for m in spec.mounts]
            + [o for m in spec.mounts for o in m.options]
            + list(spec.masked_paths) + list(spec.readonly_paths)
            + list(spec.sysctls.values()) + [n.path or "" for n in spec.namespaces])


# --- the translation ----------------------------------------------------------

def spec_to_config(spec: Spec, container_id: str, lxcpath: str, cgroup_version: int, *,
                   log_file: str | None = None, log_level: str = "INFO",
                   source_is_dir: Callable[[str], bool] = os.path.isdir,
                   mount_binary: str = MOUNT_BINARY,
                   targets: Sequence[MountTarget] | None = None,
                   readlink: Readlink = _no_link) -> list[tuple[str, str]]:
    """The LXC config items for ``spec``, in order.

    ``targets`` are the mounts' targets (paths.mount_targets, made by the driver);
    ``readlink`` reads a host path's symlink, to resolve the masked and read-only paths in
    the rootfs (and the targets when not given). ``source_is_dir`` tells whether a bind
    source is a directory (``create=dir`` or ``create=file`` where liblxc makes the
    target). The defaults see no symlink and look at nothing on the host but bind sources;
    they can be replaced in tests.
    """
    cdir = os.path.join(lxcpath, container_id)
    items: list[tuple[str, str]] = []

    def add(key: str, value: object) -> None:
        items.append((key, str(value)))

    # identity, rootfs, logging, console
    if spec.hostname:
        add("lxc.uts.name", spec.hostname)
    add("lxc.rootfs.path", f"dir:{spec.root.path}")
    add("lxc.rootfs.managed", 0)          # never let liblxc delete the rootfs
    add("lxc.log.file", log_file or os.path.join(cdir, "lxc.log"))
    add("lxc.log.level", log_level)
    add("lxc.console.path", "none")
    add("lxc.tty.max", 0)
    add("lxc.pty.max", 0)
    add("lxc.autodev", 0)
    add("lxc.ephemeral", 0)

    # the process
    p = spec.process
    words = [init_cmd_word(a) for a in p.args]
    if all(w is not None for w in words):
        add("lxc.init.cmd", " ".join(words))  # type: ignore[arg-type]
    add("lxc.init.cwd", p.cwd)
    add("lxc.init.uid", p.user.uid)
    add("lxc.init.gid", p.user.gid)
    if p.user.additional_gids:
        add("lxc.init.groups", ",".join(str(g) for g in p.user.additional_gids))
    for key, value in process_env(p).items():
        add("lxc.environment", f"{key}={value}")
    bounding = p.capabilities.bounding
    add("lxc.cap.keep", " ".join(cap_token(c) for c in bounding) if bounding else "none")
    add("lxc.no_new_privs", int(p.no_new_privileges))
    if p.apparmor_profile:
        add("lxc.apparmor.profile", p.apparmor_profile)
    if spec.seccomp.mode != "unconfined":
        add("lxc.seccomp.profile", os.path.join(cdir, "seccomp"))
    for rl in p.rlimits:
        add(f"lxc.prlimit.{rl.type}", f"{rlimit_value(rl.soft)}:{rlimit_value(rl.hard)}")
    if p.oom_score_adj is not None:
        add("lxc.proc.oom_score_adj", p.oom_score_adj)

    # namespaces and id maps
    clone = [NS_NAMES[n.type] for n in spec.namespaces if not n.path]
    add("lxc.namespace.clone", " ".join(clone))
    for n in spec.namespaces:
        if n.path:
            add(f"lxc.namespace.share.{NS_NAMES[n.type]}", n.path)
    for m in spec.uid_mappings:
        add("lxc.idmap", f"u {m.container_id} {m.host_id} {m.size}")
    for m in spec.gid_mappings:
        add("lxc.idmap", f"g {m.container_id} {m.host_id} {m.size}")

    # network: mode none is a namespace with only lo; host keeps the host's
    if spec.network.mode == "none" and not spec.namespace_path("network"):
        add("lxc.net.0.type", "empty")
    elif spec.network.mode == "host":
        add("lxc.net.0.type", "none")

    # sysctls (domainname is one: LXC has no key of its own for it)
    sysctls = dict(spec.sysctls)
    if spec.domainname:
        sysctls["kernel.domainname"] = spec.domainname
    for name, value in sysctls.items():
        add(f"lxc.sysctl.{name.replace('/', '.')}", value)

    items += cgroup_items(spec, container_id, lxcpath, cgroup_version)
    if targets is None:
        targets = mount_targets(spec, readlink)[0]
    items += mount_items(spec, source_is_dir, targets, readlink)
    items += hook_items(spec, mount_binary, cgroup_version,
                        cgroup_names(container_id, lxcpath).container, cdir)
    return items


def cgroup_items(spec: Spec, container_id: str, lxcpath: str,
                 cgroup_version: int) -> list[tuple[str, str]]:
    """Cgroup placement, limits and device rules (v1 keys or cgroup2 keys)."""
    from execdriver.config import DeviceRule
    from execdriver.host import container_rules, rule_line

    names = cgroup_names(container_id, lxcpath)
    items = [("lxc.cgroup.dir.container", names.container),
             ("lxc.cgroup.dir.monitor", names.monitor),
             ("lxc.cgroup.dir.monitor.pivot", names.pivot)]
    r = spec.resources
    mem, cpu = r.memory, r.cpu
    if cgroup_version == 1:
        pre = "lxc.cgroup."
        if mem.limit:
            items.append((pre + "memory.limit_in_bytes", str(mem.limit)))
        if mem.swap is not None:
            items.append((pre + "memory.memsw.limit_in_bytes", str(mem.swap)))
        if mem.reservation:
            items.append((pre + "memory.soft_limit_in_bytes", str(mem.reservation)))
        if cpu.shares:
            items.append((pre + "cpu.shares", str(cpu.shares)))
        if cpu.period:
            items.append((pre + "cpu.cfs_period_us", str(cpu.period)))
        if cpu.quota:
            items.append((pre + "cpu.cfs_quota_us", str(cpu.quota)))
        if r.block_io.weight:
            items.append((pre + "blkio.weight", str(r.block_io.weight)))
    else:
        from execdriver.host import blkio_to_io_weight, shares_to_weight, swap_max
        pre = "lxc.cgroup2."
        if mem.limit:
            items.append((pre + "memory.max", str(mem.limit)))
        if mem.swap is not None:
            sw = swap_max(mem.limit, mem.swap)
            if sw is not None:
                items.append((pre + "memory.swap.max", sw))
        if mem.reservation:
            items.append((pre + "memory.low", str(mem.reservation)))
        if cpu.shares:
            items.append((pre + "cpu.weight", str(shares_to_weight(cpu.shares))))
        if cpu.quota or cpu.period:
            quota = str(cpu.quota) if cpu.quota else "max"
            items.append((pre + "cpu.max", f"{quota} {cpu.period or 100000}"))
        if r.block_io.weight:
            items.append((pre + "io.weight", str(blkio_to_io_weight(r.block_io.weight))))
    if cpu.cpus:
        items.append((pre + "cpuset.cpus", cpu.cpus))
    if cpu.mems:
        items.append((pre + "cpuset.mems", cpu.mems))
    if r.pids.limit:
        items.append((pre + "pids.max", str(r.pids.limit)))
    extra = [DeviceRule(allow=d.allow, type=d.type, major=d.major, minor=d.minor, access=d.access)
             for d in r.devices]                    # as the kernel's plain data
    for rule in container_rules(extra):
        items.append((pre + ("devices.allow" if rule.allow else "devices.deny"), rule_line(rule)))
    return items


def _entry(source: str, target: str, fstype: str, options: list[str]) -> tuple[str, str]:
    opts = ",".join(options) or "defaults"
    fields = [fstab_escape(f) for f in (source, target, fstype, opts)]
    return ("lxc.mount.entry", " ".join(fields) + " 0 0")


def mount_items(spec: Spec, source_is_dir: Callable[[str], bool],
                targets: Sequence[MountTarget], readlink: Readlink = _no_link
                ) -> list[tuple[str, str]]:
    """Mount entries for the spec's mounts at their targets, then masked and read-only
    paths (resolved in the rootfs)."""
    items: list[tuple[str, str]] = []
    auto: list[str] = []
    for m, t in zip(spec.mounts, targets, strict=True):     # one target per mount
        dest = os.path.normpath(m.destination)
        target = rel(t.path)
        opts = list(m.options)
        if t.liblxc_creates:
            opts.append("create=dir" if target_is_dir(m, source_is_dir) else "create=file")
        if m.type in ("cgroup", "cgroup2"):
            # LXC's own cgroup mount: a tmpfs with each hierarchy (v1) or cgroup2 (v2),
            # read-only whatever the spec says (the tmpfs: see cgroup_ro_hook)
            auto.append("cgroup:ro:force")
            continue
        if binding(m):
            if "bind" not in opts and "rbind" not in opts:
                opts.insert(0, "bind")
            items.append(_entry(m.source or "", target, "none", opts))
            continue
        items.append(_entry(m.source or m.type, target, m.type, opts))
        if dest == "/dev" and m.type == "tmpfs":
            # the standard nodes, bound from the host (what LXC itself does in a userns),
            # made by liblxc in the (empty) tmpfs
            for node in DEV_NODES:
                items.append(_entry(f"/dev/{node}", f"{target}/{node}", "none",
                                    ["bind", "create=file"]))
        elif dest == "/dev/pts" and m.type == "devpts":
            items.append(_entry(f"{target}/ptmx", f"{rel(os.path.dirname(t.path))}/ptmx",
                                "none", ["bind", "relative", "create=file"]))
    if auto:
        items.append(("lxc.mount.auto", " ".join(auto)))
    masked = resolve_paths(spec.masked_paths, spec, readlink) if spec.masked_paths else []
    for path in masked:
        target = rel(path)
        items.append(_entry("/dev/null", target, "none", ["bind", "optional"]))
        items.append(_entry("tmpfs", target, "tmpfs",
                            ["ro", "nosuid", "nodev", "noexec", "optional"]))
    readonly = resolve_paths(spec.readonly_paths, spec, readlink) if spec.readonly_paths else []
    for path in readonly:
        target = rel(path)
        items.append(_entry(target, target, "none", ["bind", "relative", "ro", "optional"]))
    return items


def _host_hook(path: str, args: list[str], env: list[str], timeout: int | None) -> str:
    words = []
    if timeout:
        words += ["timeout", "-s", "KILL", str(timeout)]
    if env:
        words += ["env", "-i", *env]
    words += [path, *args[1:]]
    return " ".join(shlex.quote(w) for w in words)


# The cwd check (a start-host hook; $1 the verdict file, $2 process.cwd). liblxc's init has
# done its chdir and waits for the monitor, which runs the start-host hooks: the cwd must be
# reachable from the init's root, as getcwd() sees it: walking up through ".." (across mounts)
# must meet the root (the same mount id and inode) before it stops moving. A mount id is read
# from /proc/self/fdinfo; nothing forks but the subshell, whose failure (a path too long,
# the init gone) refuses too.
_CWD_CHECK_SH = (
    'mnt() { exec 3<"$1"; M=; while read -r k v; do [ "$k" = mnt_id: ] && M=$v; done'
    ' </proc/self/fdinfo/3; exec 3<&-; [ -n "$M" ] || exit 2; }; '
    'p=/proc/$LXC_PID; ( mnt "$p/root"; root=$M; d=$p/cwd; mnt "$d"; m=$M; while :; do'
    ' [ "$m" = "$root" ] && [ "$d" -ef "$p/root" ] && exit 0; mnt "$d/.."; '
    '[ "$M" = "$m" ] && [ "$d/.." -ef "$d" ] && exit 1; d=$d/..; m=$M; done ) 2>/dev/null; '
    'case $? in 0) exit 0;; 1) why="the working directory liblxc changed to is outside the '
    'container";; *) why="cannot check where liblxc changed the working directory to";; esac; '
    'printf "process.cwd=%s: %s" "$2" "$why" >"$1"; exit 1'
)


def cwd_check_hook(cwd: str, cdir: str) -> str:
    """The start-host hook that refuses an init whose cwd is outside its root (it writes why
    to ``<cdir>/cwd-refused``): the defence behind :func:`cwd_problem`."""
    return " ".join(shlex.quote(w) for w in (
        "/bin/sh", "-c", _CWD_CHECK_SH, "cwd-check", os.path.join(cdir, CWD_REFUSED), cwd))


def cgroup_ro_hook(mount_binary: str) -> str:
    """The mount hook that remounts /sys/fs/cgroup (liblxc's tmpfs, or cgroup2) read-only,
    keeping the flags liblxc gave it."""
    return (f"{shlex.quote(mount_binary)} -o remount,bind,ro,nosuid,nodev,noexec "
            '"$LXC_ROOTFS_MOUNT/sys/fs/cgroup"')


def hook_items(spec: Spec, mount_binary: str, cgroup_version: int, cgroup: str,
               cdir: str) -> list[tuple[str, str]]:
    """LXC hooks for the cwd check, the spec's hooks, the read-only root and the OOM record.

    prestart and create_runtime run as ``start-host`` (host namespaces, container
    set up, init not started), create_container as ``mount`` (container mount
    namespace, before pivot_root), start_container as ``start`` (in the container,
    just before the init), poststop as ``post-stop``.
    """
    h = spec.hooks
    items: list[tuple[str, str]] = [("lxc.hook.version", "1")]
    # first: the spec's hooks must not run for an init that is not where it should be
    items.append(("lxc.hook.start-host", cwd_check_hook(spec.process.cwd, cdir)))
    for hook in [*h.prestart, *h.create_runtime]:
        items.append(("lxc.hook.start-host", _host_hook(hook.path, hook.args, hook.env, hook.timeout)))
    if any(m.type in ("cgroup", "cgroup2") for m in spec.mounts):
        # liblxc mounts cgroups (lxc.mount.auto, before the mount hooks) in a tmpfs it
        # leaves writable, even with cgroup:ro: the first mount hook makes it read-only
        items.append(("lxc.hook.mount", cgroup_ro_hook(mount_binary)))
    for hook in h.create_container:
        items.append(("lxc.hook.mount", _host_hook(hook.path, hook.args, hook.env, hook.timeout)))
    if spec.root.readonly:
        # last mount hook: every mount target exists by now
        items.append(("lxc.hook.mount",
                      f"{shlex.quote(mount_binary)} -o remount,bind,ro \"$LXC_ROOTFS_MOUNT\""))
    for hook in h.start_container:
        items.append(("lxc.hook.start", hook.path))
    # Before liblxc removes the cgroup, keep its OOM counter: the exit status reports it.
    if cgroup_version == 1:
        src = f"/sys/fs/cgroup/memory/{cgroup}/memory.oom_control"
    else:
        src = f"/sys/fs/cgroup/{cgroup}/memory.events"
    script = f"cat {shlex.quote(src)} > {shlex.quote(os.path.join(cdir, 'oom'))} 2>/dev/null; true"
    items.append(("lxc.hook.stop", f"/bin/sh -c {shlex.quote(script)}"))
    for hook in h.poststop:
        items.append(("lxc.hook.post-stop", _host_hook(hook.path, hook.args, hook.env, hook.timeout)))
    return items


# --- seccomp -----------------------------------------------------------------

# LXC's profile names syscalls only (no numbers, no ranges), so a syscall newer than the
# table cannot be told apart from a denied one by number, as the native compiler does
# (numbers above MAX_KNOWN answer ENOSYS). The closest construct: ENOSYS is the default
# action of every LXC profile, and the spec profile's own default is given name by name,
# for every syscall of the table it does not decide unconditionally.
ENOSYS_ACTION = f"errno {_errno.ENOSYS}"


def _action(action: str, errno: int | None) -> str:
    if action == "errno":
        return f"errno {1 if errno is None else errno}"
    return action


def _condition(a: SeccompArg | config.SeccompArg) -> str:
    if a.op == "masked_eq":
        return f"[{a.index},{a.value_two},SCMP_CMP_MASKED_EQ,{a.value}]"
    return f"[{a.index},{a.value},{_SECCOMP_OPS[a.op]}]"


def seccomp_profile(spec: Spec, table: Mapping[str, int] | None = None) -> str | None:
    """The spec's seccomp section in LXC's v2 profile format (None when unconfined).

    Mode ``default`` is the native driver's default profile (an allowlist), so both
    drivers deny the same calls. OCI's ``masked_eq`` compares ``(arg & value) ==
    value_two``; LXC writes that as ``[index,value_two,SCMP_CMP_MASKED_EQ,value]``.

    As in the native driver, a syscall the ``table`` (default: this architecture's) does
    not know answers ENOSYS: that is LXC's default action here (see ENOSYS_ACTION), and
    the profile's default follows, as a rule per name, for each syscall of the table no
    rule decides unconditionally. Rules are tried in order (the first that matches
    decides) and libseccomp does not keep that order: an unconditional rule wipes the
    conditional ones of its syscall. So what answers when no condition of a syscall
    matches (an unconditional rule after them, else the profile's default) is a rule
    whose condition always holds, ``[i,0,SCMP_CMP_GE]`` on the lowest argument index
    compared: libseccomp orders it after every other comparison of that argument and
    after those of higher ones (db.c: _db_chain_lt). A rule after an unconditional one
    for the same name is dead (as in the native compiler) and left out; so is a rule
    answering ENOSYS where that is what the default gives (libseccomp refuses a rule with
    the default's action).
    """
    if spec.seccomp.mode == "unconfined":
        return None
    profile: SeccompProfile | config.SeccompProfile      # the default one is Config data
    if spec.seccomp.mode == "default":
        from execdriver.host import DEFAULT_SECCOMP_PROFILE
        profile = DEFAULT_SECCOMP_PROFILE
    else:
        assert spec.seccomp.profile is not None
        profile = spec.seccomp.profile
    if table is None:
        from execdriver.host import SYSCALL_NUMBERS
        table = SYSCALL_NUMBERS
    lines = ["2", f"allowlist {ENOSYS_ACTION}"]
    decided: set[str] = set()                       # by an unconditional rule
    compared: dict[str, list[SeccompArg | config.SeccompArg]] = {}   # the conditions of a name's rules

    def otherwise(name: str, action: str) -> None:
        """``action`` for ``name`` where no earlier rule matched."""
        decided.add(name)
        args = compared.get(name, [])
        if action == ENOSYS_ACTION:
            return                  # LXC's default
        if not args:
            lines.append(f"{name} {action}")
            return
        first = min(a.index for a in args)
        if not any(a.index == first and a.op == "ge" and a.value == 0 for a in args):
            # (else that identical node is there already: libseccomp would refuse it)
            lines.append(f"{name} {action} [{first},0,SCMP_CMP_GE]")

    for rule in profile.syscalls:
        action = _action(rule.action, rule.errno)
        for name in rule.names:
            if name in decided:
                continue
            if not rule.args:
                otherwise(name, action)
                continue
            compared.setdefault(name, []).extend(rule.args)
            lines.append(" ".join([name, action, *map(_condition, rule.args)]))
    default = _action(profile.default_action, profile.default_errno)
    for name in [*compared, *sorted(table, key=table.__getitem__)]:
        if name not in decided:
            otherwise(name, default)
    return "\n".join(lines) + "\n"
