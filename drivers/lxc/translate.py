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
  :func:`cwd_problem` refuses, before anything exists, a cwd that goes through /proc and
  its kin (symlinks resolved inside the rootfs), and the first start-host hook
  (:func:`cwd_check_hook`) checks, after that chdir and before the exec, that the init's
  cwd is reachable from its root.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from execdriver.spec import CAP_NUMBERS, Mount, Process, SeccompProfile, Spec

from .monitor import CWD_REFUSED

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
    """The spec's environment plus HOME when it has none (as the native driver does)."""
    env = dict(p.env)
    env.setdefault("HOME", "/root" if p.user.uid == 0 else "/")
    return env


def rel(path: str) -> str:
    """A container path as LXC's rootfs-relative mount target."""
    return os.path.normpath(path).lstrip("/")


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
    if p.apparmor_profile and not host.apparmor:
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
    binding = m.type == "bind" or "bind" in m.options or "rbind" in m.options
    if binding and m.source and not m.source.startswith("/"):
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


# --- the working directory ------------------------------------------------------

# Under these a path can be a magic link to a descriptor of whoever does the chdir: liblxc's
# init still holds host directories then (CVE-2024-21626). liblxc makes the /dev links.
PROC_LIKE = ("/proc", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")
MAX_SYMLINKS = 40


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def resolve_in_root(path: str, readlink: Callable[[str], str | None]) -> str | None:
    """``path`` with its symlinks resolved as inside a chroot: ``readlink(p)`` reads the
    container path ``p`` (None: not a link); an absolute target restarts at the container's
    root and ``..`` stops there. Each path read is one the walk went through. None: too
    many links (ELOOP)."""
    done: list[str] = []
    todo = path.split("/")[::-1]
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        target = readlink("/" + "/".join([*done, part]))
        if target is None:
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            return None
        if target.startswith("/"):
            done = []
        todo += target.split("/")[::-1]
    return "/" + "/".join(done)


def _binding(m: Mount) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def _proc_area(path: str, mounts: list[Mount]) -> str | None:
    """The proc-like place ``path`` is in: see PROC_LIKE, a proc mount of the spec, or a
    bind mount of the host's (``-v /proc:/x``, ``-v /:/host`` then /host/proc)."""
    for top in PROC_LIKE:
        if _under(path, top):
            return top
    for m in mounts:
        dest = os.path.normpath(m.destination)
        if not _under(path, dest):
            continue
        if m.type == "proc":
            return dest
        if _binding(m) and m.source:
            on_host = os.path.normpath(os.path.join(m.source, os.path.relpath(path, dest)))
            if any(_under(on_host, top) for top in PROC_LIKE):
                return dest
    return None


def container_readlink(spec: Spec, readlink: Callable[[str], str | None]
                       ) -> Callable[[str], str | None]:
    """readlink of a container path as it will be at start: in a bind mount's source, in
    the rootfs elsewhere, never in another mount (its contents are made at start).
    ``readlink`` reads a host path (it never follows the last component)."""
    mounts = [(os.path.normpath(m.destination), m) for m in spec.mounts]

    def read(path: str) -> str | None:
        for dest, m in reversed(mounts):        # the last mount over a path hides the others
            if _under(path, dest):
                if path == dest or not _binding(m) or not m.source:
                    return None
                return readlink(os.path.join(m.source, os.path.relpath(path, dest)))
        return readlink(os.path.join(spec.root.path, path.lstrip("/")))
    return read


def _walk(path: str, lookup: Callable[[str], str | None], mounts: list[Mount]
          ) -> tuple[str | None, list[str]]:
    """resolve_in_root, never reading inside a proc-like place; and every path walked."""
    walked: list[str] = []

    def read(p: str) -> str | None:
        walked.append(p)
        return None if _proc_area(p, mounts) else lookup(p)
    return resolve_in_root(path, read), walked


def cwd_problem(spec: Spec, readlink: Callable[[str], str | None], cwd: str | None = None
                ) -> str | None:
    """Why ``cwd`` (default: process.cwd) must not be chdir()ed to, or None.

    Refused: a path that goes, as written or through a symlink resolved in the rootfs
    (never by following host paths), through a proc-like place: there a descriptor link
    leads out of the container. Anything else resolves inside the root."""
    cwd = spec.process.cwd if cwd is None else cwd
    where = f"process.cwd={cwd}"
    for as_written, lookup in ((True, lambda _p: None), (False, container_readlink(spec, readlink))):
        resolved, walked = _walk(cwd, lookup, spec.mounts)
        if resolved is None:
            return f"{where}: too many levels of symbolic links in the rootfs"
        for path in walked:
            top = _proc_area(path, spec.mounts)
            if top is not None:
                shown = resolved if _proc_area(resolved, spec.mounts) else path
                how = "is" if as_written else \
                    f"leads (symlinks resolved in the rootfs) to {shown}, which is"
                return (f"{where}: {how} under {top}, where a descriptor link can lead out of "
                        "the container")
    return None


# --- the translation ----------------------------------------------------------

def spec_to_config(spec: Spec, container_id: str, lxcpath: str, cgroup_version: int, *,
                   log_file: str | None = None, log_level: str = "INFO",
                   source_is_dir: Callable[[str], bool] = os.path.isdir,
                   mount_binary: str = MOUNT_BINARY) -> list[tuple[str, str]]:
    """The LXC config items for ``spec``, in order.

    ``source_is_dir`` tells whether a bind source is a directory (it decides
    ``create=dir`` or ``create=file``); it is the one look at the host, and can
    be replaced in tests.
    """
    cdir = os.path.join(lxcpath, container_id)
    items: list[tuple[str, str]] = []
    add = lambda k, v: items.append((k, str(v)))

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
    items += mount_items(spec, source_is_dir)
    items += hook_items(spec, mount_binary, cgroup_version,
                        cgroup_names(container_id, lxcpath).container, cdir)
    return items


def cgroup_items(spec: Spec, container_id: str, lxcpath: str,
                 cgroup_version: int) -> list[tuple[str, str]]:
    """Cgroup placement, limits and device rules (v1 keys or cgroup2 keys)."""
    from execdriver.kernel.cgroups.devices import container_rules, rule_line

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
        from execdriver.kernel.cgroups.v2 import blkio_to_io_weight, shares_to_weight, swap_max
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
    for rule in container_rules(list(r.devices)):
        items.append((pre + ("devices.allow" if rule.allow else "devices.deny"), rule_line(rule)))
    return items


def _entry(source: str, target: str, fstype: str, options: list[str]) -> tuple[str, str]:
    opts = ",".join(options) or "defaults"
    fields = [fstab_escape(f) for f in (source, target, fstype, opts)]
    return ("lxc.mount.entry", " ".join(fields) + " 0 0")


def mount_items(spec: Spec, source_is_dir: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Mount entries for the spec's mounts, then masked and read-only paths."""
    items: list[tuple[str, str]] = []
    auto: list[str] = []
    for m in spec.mounts:
        dest = os.path.normpath(m.destination)
        target = rel(dest)
        opts = [o for o in m.options]
        if m.type in ("cgroup", "cgroup2"):
            # LXC's own cgroup mount: a tmpfs with each hierarchy (v1) or cgroup2 (v2).
            auto.append("cgroup:ro:force" if "ro" in opts else "cgroup:mixed:force")
            continue
        binding = m.type == "bind" or "bind" in opts or "rbind" in opts
        if binding:
            if "bind" not in opts and "rbind" not in opts:
                opts.insert(0, "bind")
            src = m.source or ""
            create = "create=dir" if source_is_dir(src) else "create=file"
            items.append(_entry(src, target, "none", opts + [create]))
            continue
        items.append(_entry(m.source or m.type, target, m.type, opts + ["create=dir"]))
        if dest == "/dev" and m.type == "tmpfs":
            # the standard nodes, bound from the host (what LXC itself does in a userns)
            for node in DEV_NODES:
                items.append(_entry(f"/dev/{node}", f"dev/{node}", "none",
                                    ["bind", "create=file"]))
        elif dest == "/dev/pts" and m.type == "devpts":
            items.append(_entry("dev/pts/ptmx", "dev/ptmx", "none",
                                ["bind", "relative", "create=file"]))
    if auto:
        items.append(("lxc.mount.auto", " ".join(auto)))
    for path in spec.masked_paths:
        target = rel(path)
        items.append(_entry("/dev/null", target, "none", ["bind", "optional"]))
        items.append(_entry("tmpfs", target, "tmpfs",
                            ["ro", "nosuid", "nodev", "noexec", "optional"]))
    for path in spec.readonly_paths:
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

def _action(action: str, errno: int | None) -> str:
    if action == "errno":
        return f"errno {1 if errno is None else errno}"
    return action


def seccomp_profile(spec: Spec) -> str | None:
    """The spec's seccomp section in LXC's v2 profile format (None when unconfined).

    Mode ``default`` is the native driver's default profile (an allowlist), so both
    drivers deny the same calls. OCI's ``masked_eq`` compares ``(arg & value) ==
    value_two``; LXC writes that as ``[index,value_two,SCMP_CMP_MASKED_EQ,value]``.
    """
    if spec.seccomp.mode == "unconfined":
        return None
    if spec.seccomp.mode == "default":
        from execdriver.kernel.seccomp_default import DEFAULT_PROFILE
        profile = DEFAULT_PROFILE
    else:
        assert spec.seccomp.profile is not None
        profile = spec.seccomp.profile
    default = _action(profile.default_action, profile.default_errno)
    kind = "denylist" if profile.default_action == "allow" else "allowlist"
    lines = ["2", f"{kind} {default}"]
    for rule in profile.syscalls:
        action = _action(rule.action, rule.errno)
        conds = []
        for a in rule.args:
            if a.op == "masked_eq":
                conds.append(f"[{a.index},{a.value_two},SCMP_CMP_MASKED_EQ,{a.value}]")
            else:
                conds.append(f"[{a.index},{a.value},{_SECCOMP_OPS[a.op]}]")
        for name in rule.names:
            lines.append(" ".join([name, action, *conds]))
    return "\n".join(lines) + "\n"
