"""Pure translation of an execdriver Spec into a systemd-nspawn command line.

``refusals`` names the fields nspawn cannot honour beyond the declared features
(a namespace it always creates but the spec leaves out, a mount type it has no
option for...); ``nspawn_argv`` translates the rest. Both are pure: tested
with tables, without root (tests/unit/test_nspawn_translate.py).
"""

from __future__ import annotations

from typing import Any

from execdriver.spec import CAPABILITIES, Mount, Process, Spec, default_mounts

#: what systemd-nspawn gives the payload when not told otherwise (v252, nspawn.c's
#: arg_caps_retain): --capability/--drop-capability are relative to it
NSPAWN_DEFAULT_CAPS = frozenset({
    "CAP_AUDIT_CONTROL", "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_IPC_OWNER", "CAP_KILL",
    "CAP_LEASE", "CAP_LINUX_IMMUTABLE", "CAP_MKNOD", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
    "CAP_SETUID", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_CHROOT", "CAP_SYS_NICE",
    "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE", "CAP_SYS_TTY_CONFIG",
})
#: namespaces systemd-nspawn always creates (the network one only with --private-network)
ALWAYS_NEW = ("pid", "mount", "ipc", "uts")
#: inside the container, where the driver binds the host's static busybox (for
#: ``env -i`` and ``setpriv``); /run is nspawn's own tmpfs, so the rootfs is untouched
SHIM = "/run/host/execdriver/busybox"
DEFAULT_UMASK = 0o022


def inheritable_off(bounding: set[str]) -> str:
    """busybox setpriv knows no "-all": every capability nspawn may leave inheritable."""
    caps = NSPAWN_DEFAULT_CAPS | {"CAP_NET_ADMIN"} | bounding  # (NET_ADMIN: --private-network)
    return "--inh-caps=" + ",".join("-" + c.removeprefix("CAP_").lower() for c in sorted(caps))


def _is_default_mount(m: Mount) -> bool:
    return m in default_mounts()


def refusals(spec: Spec) -> list[str]:
    """Fields of ``spec`` nspawn cannot honour, one ``field: why`` each."""
    out: list[str] = []
    types = spec.namespace_types()
    missing = [t for t in ALWAYS_NEW if t not in types]
    if missing:
        out.append(f"namespaces: systemd-nspawn always creates {', '.join(missing)}")
    p = spec.process
    if p.umask != DEFAULT_UMASK:
        out.append("process.umask: systemd-nspawn sets 0022")
    caps = p.capabilities
    if set(caps.effective) != set(caps.bounding) or set(caps.permitted) != set(caps.bounding):
        out.append("process.capabilities: effective and permitted must equal bounding")
    if caps.inheritable or caps.ambient:
        out.append("process.capabilities: inheritable and ambient must be empty")
    for i, m in enumerate(spec.mounts):
        if _is_default_mount(m) or m.type == "tmpfs":
            continue
        if m.type == "bind" or {"bind", "rbind"} & set(m.options):
            extra = set(m.options) - {"bind", "rbind", "ro", "rw"}
            if extra:
                out.append(f"mounts[{i}].options: {', '.join(sorted(extra))} not supported")
            continue
        out.append(f"mounts[{i}].type: {m.type} not supported (only bind and tmpfs)")
    return out


def _mount_args(m: Mount) -> list[str]:
    if _is_default_mount(m):
        return []       # systemd-nspawn mounts /proc, /dev, /sys... itself
    if m.type == "tmpfs":
        opts = ",".join(o for o in m.options if o)
        return [f"--tmpfs={_escape(m.destination)}" + (f":{opts}" if opts else "")]
    flag = "--bind-ro" if "ro" in m.options else "--bind"
    return [f"{flag}={_escape(m.source or '')}:{_escape(m.destination)}"]


def _escape(path: str) -> str:
    """A path in nspawn's SOURCE:DEST syntax, where ':' is escaped."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def nspawn_argv(spec: Spec, *, nspawn: str, busybox: str, machine: str) -> list[str]:
    """The whole command line that runs ``spec`` (whose refusals are empty)."""
    p = spec.process
    argv = [nspawn, "--quiet", "--register=no", "--keep-unit", "--console=pipe",
            f"--machine={machine}", f"--directory={spec.root.path}",
            f"--chdir={p.cwd}", f"--bind-ro={busybox}:{SHIM}"]
    if spec.root.readonly:
        argv.append("--read-only")
    if spec.hostname:
        argv.append(f"--hostname={spec.hostname}")
    if spec.network.mode == "none":
        argv.append("--private-network")
    bounding = set(p.capabilities.bounding)
    add = sorted(bounding - NSPAWN_DEFAULT_CAPS)
    drop = sorted(set(CAPABILITIES) - bounding)     # nspawn adds NET_ADMIN to a private network
    if add:
        argv.append("--capability=" + ",".join(add))
    if drop:
        argv.append("--drop-capability=" + ",".join(drop))
    argv.append(f"--no-new-privileges={'yes' if p.no_new_privileges else 'no'}")
    for r in p.rlimits:
        argv.append(f"--rlimit=RLIMIT_{r.type.upper()}={r.soft}:{r.hard}")
    if p.oom_score_adj is not None:
        argv.append(f"--oom-score-adjust={p.oom_score_adj}")
    for m in spec.mounts:
        argv += _mount_args(m)
    # nspawn adds variables of its own (container=, TERM=, ...): the static
    # busybox's env -i gives the payload exactly the spec's environment, and
    # setpriv clears the inheritable set nspawn fills.
    env = [f"{k}={v}" for k, v in p.env.items()]
    argv += ["--", SHIM, "setpriv", inheritable_off(bounding), SHIM, "env", "-i", *env, *p.args]
    return argv


#: the leader's namespaces an exec'd process joins when they differ from the host's
#: (kernel names in /proc/<pid>/ns; the monitor turns them into CLONE_NEW* flags)
EXEC_NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time")


def exec_config(process: Process) -> dict[str, Any]:
    """What the monitor applies to an exec'd process after it joins the container:
    the process's env (exactly), cwd, user, umask, rlimits, oom_score_adj, capability
    sets and no_new_privileges (plain data, as JSON)."""
    caps = process.capabilities
    return {
        "args": list(process.args), "env": dict(process.env), "cwd": process.cwd,
        "uid": process.user.uid, "gid": process.user.gid,
        "additional_gids": list(process.user.additional_gids), "umask": process.umask,
        "rlimits": [[f"RLIMIT_{r.type.upper()}", r.soft, r.hard] for r in process.rlimits],
        "oom_score_adj": process.oom_score_adj,
        "capabilities": {k: list(getattr(caps, k)) for k in
                         ("bounding", "effective", "permitted", "inheritable", "ambient")},
        "no_new_privileges": process.no_new_privileges,
    }
