"""The spec -> the guest's view (pure functions, tested without root or qemu).

``process_config`` encodes a process for execdriver-guest (guest.c documents the
NUL-separated fields); ``refusals`` names the fields of a spec that the qemu driver
cannot apply although their feature is declared (one message each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .vm import MIN_MEMORY_MIB

if TYPE_CHECKING:
    from execdriver.spec import Process, Spec

#: capability numbers (linux/capability.h), by name
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
#: rlimit numbers (asm-generic/resource.h), by execdriver's rlimit name
RLIMITS = ("cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock",
           "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime")


def cap_mask(names: list[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES.index(name.upper())
    return mask


def process_config(process: Process) -> bytes:
    """``process`` as execdriver-guest reads it (its /execdriver/config, or an exec request)."""
    u, caps = process.user, process.capabilities
    fields: list[str] = [process.cwd, str(u.uid), str(u.gid), str(len(u.additional_gids)),
                         *map(str, u.additional_gids), str(len(process.env)),
                         *(f"{k}={v}" for k, v in process.env.items()),
                         str(len(process.args)), *process.args, f"{process.umask:o}",
                         "1" if process.no_new_privileges else "0",
                         "" if process.oom_score_adj is None else str(process.oom_score_adj)]
    fields += [str(cap_mask(s)) for s in (caps.bounding, caps.effective, caps.permitted,
                                           caps.inheritable, caps.ambient)]
    fields.append(str(len(process.rlimits)))
    for r in process.rlimits:
        fields += [str(RLIMITS.index(r.type)), str(r.soft), str(r.hard)]
    return b"".join(f.encode() + b"\0" for f in fields)


#: mount types the guest mounts itself (no host path involved); cgroup is the guest's cgroup2
GUEST_MOUNT_TYPES = {"proc": "proc", "sysfs": "sysfs", "tmpfs": "tmpfs", "devpts": "devpts",
                     "mqueue": "mqueue", "cgroup": "cgroup2", "cgroup2": "cgroup2"}
#: what the guest gets at /dev when the spec mounts nothing there
DEFAULT_DEV = ("tmpfs", "tmpfs", "nosuid,mode=755,size=65536k", "/dev")


def guest_mounts(spec: Spec) -> list[tuple[str, str, str, str]]:
    """(type, source, options, destination) of each mount, as the guest makes it."""
    out = []
    for m in spec.mounts:
        options = [o for o in m.options if o not in ("bind", "rbind")] or ["defaults"]
        out.append((GUEST_MOUNT_TYPES.get(m.type, m.type), m.source or m.type, ",".join(options),
                    m.destination.rstrip("/") or "/"))
    if not any(dest == "/dev" for *_, dest in out):
        out.insert(0, DEFAULT_DEV)
    return out


def init_conf(spec: Spec, hostname: str) -> str:
    """/execdriver/init.conf: the shell assignments and the mount list /init sources."""
    from shlex import quote
    lines = [f"READONLY={1 if spec.root.readonly else 0}", f"HOSTNAME={quote(hostname)}",
             "guest_mounts() {"]
    lines += ["    mnt " + " ".join(quote(f) for f in m) for m in guest_mounts(spec)]
    lines += ["    :", "}"]
    return "\n".join(lines) + "\n"


def refusals(spec: Spec) -> list[str]:
    """The fields the driver refuses although their feature is declared."""
    problems = []
    for i, m in enumerate(spec.mounts):
        if m.type not in GUEST_MOUNT_TYPES:
            problems.append(f"mounts[{i}] (type {m.type}: only kernel file systems, "
                            "no host paths, reach the guest)")
    mem = spec.resources.memory
    if mem.reservation is not None:
        problems.append("resources.memory.reservation (the guest's size is its limit)")
    if mem.swap is not None:
        problems.append("resources.memory.swap (the guest has no swap)")
    if mem.limit is not None and mem.limit < MIN_MEMORY_MIB << 20:
        problems.append(f"resources.memory.limit (a guest needs at least {MIN_MEMORY_MIB} MiB)")
    if spec.resources.cpu.shares:
        problems.append("resources.cpu.shares (only quota/period: the guest's vCPUs)")
    return problems
