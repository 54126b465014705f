"""Pure translation of an execdriver Spec into an OCI runtime config (config.json).

Only fields the driver declares as features are translated; the driver refuses
every other feature before it gets here (``ExecDriver.check_spec``), so nothing
is silently dropped.
"""

from __future__ import annotations

from typing import Any

from execdriver.spec import Mount, Process, SeccompProfile, Spec

OCI_VERSION = "1.0.2"

_SECCOMP_ACTIONS = {
    "allow": "SCMP_ACT_ALLOW", "errno": "SCMP_ACT_ERRNO", "kill": "SCMP_ACT_KILL",
    "kill_process": "SCMP_ACT_KILL_PROCESS", "trap": "SCMP_ACT_TRAP", "log": "SCMP_ACT_LOG",
    "trace": "SCMP_ACT_TRACE",
}
_SECCOMP_OPS = {
    "eq": "SCMP_CMP_EQ", "ne": "SCMP_CMP_NE", "lt": "SCMP_CMP_LT", "le": "SCMP_CMP_LE",
    "gt": "SCMP_CMP_GT", "ge": "SCMP_CMP_GE", "masked_eq": "SCMP_CMP_MASKED_EQ",
}
_CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def oci_process(p: Process) -> dict[str, Any]:
    """The OCI ``process`` object (also what ``runc exec --process`` reads)."""
    user: dict[str, Any] = {"uid": p.user.uid, "gid": p.user.gid, "umask": p.umask}
    if p.user.additional_gids:
        user["additionalGids"] = list(p.user.additional_gids)
    proc: dict[str, Any] = {
        "terminal": p.terminal,
        "user": user,
        "args": list(p.args),
        "env": [f"{k}={v}" for k, v in p.env.items()],
        "cwd": p.cwd,
        "capabilities": {s: list(getattr(p.capabilities, s)) for s in _CAP_SETS},
        "rlimits": [{"type": "RLIMIT_" + r.type.upper(), "soft": r.soft, "hard": r.hard}
                    for r in p.rlimits],
        "noNewPrivileges": p.no_new_privileges,
    }
    if p.oom_score_adj is not None:
        proc["oomScoreAdj"] = p.oom_score_adj
    return proc


def oci_mount(m: Mount) -> dict[str, Any]:
    options = list(m.options)
    # OCI (and runc) decide "bind" by the options, not the type.
    if m.type == "bind" and not {"bind", "rbind"} & set(options):
        options.append("rbind")
    return {"destination": m.destination, "type": m.type,
            "source": m.source if m.source is not None else m.type, "options": options}


def oci_seccomp(profile: SeccompProfile) -> dict[str, Any]:
    rules = []
    for rule in profile.syscalls:
        r: dict[str, Any] = {"names": list(rule.names), "action": _SECCOMP_ACTIONS[rule.action]}
        if rule.action == "errno":
            r["errnoRet"] = 1 if rule.errno is None else rule.errno
        if rule.args:
            r["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two,
                          "op": _SECCOMP_OPS[a.op]} for a in rule.args]
        rules.append(r)
    out: dict[str, Any] = {"defaultAction": _SECCOMP_ACTIONS[profile.default_action],
                           "syscalls": rules}
    if profile.default_action == "errno":
        out["defaultErrnoRet"] = profile.default_errno
    return out


def oci_resources(spec: Spec) -> dict[str, Any]:
    r = spec.resources
    # Deny every device, then the spec's rules; runc appends its standard
    # allow list (null, zero, full, tty, random, urandom, ptmx, pts).
    devices: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for d in r.devices:
        rule: dict[str, Any] = {"allow": d.allow, "type": d.type, "access": d.access}
        if d.major is not None:
            rule["major"] = d.major
        if d.minor is not None:
            rule["minor"] = d.minor
        devices.append(rule)
    out: dict[str, Any] = {"devices": devices}
    memory = {k: v for k, v in (("limit", r.memory.limit), ("reservation", r.memory.reservation),
                                ("swap", r.memory.swap)) if v is not None}
    if memory:
        out["memory"] = memory
    cpu = {k: v for k, v in (("shares", r.cpu.shares), ("quota", r.cpu.quota),
                             ("period", r.cpu.period), ("cpus", r.cpu.cpus),
                             ("mems", r.cpu.mems)) if v is not None}
    if cpu:
        out["cpu"] = cpu
    if r.pids.limit is not None:
        out["pids"] = {"limit": r.pids.limit}
    return out


def to_oci_config(spec: Spec, *, cgroups_path: str) -> dict[str, Any]:
    """The whole config.json for ``spec``; ``cgroups_path`` names the container's cgroup."""
    linux: dict[str, Any] = {
        "namespaces": [{"type": n.type, **({"path": n.path} if n.path else {})}
                       for n in spec.namespaces],
        "resources": oci_resources(spec),
        "cgroupsPath": cgroups_path,
        "maskedPaths": list(spec.masked_paths),
        "readonlyPaths": list(spec.readonly_paths),
    }
    if spec.uid_mappings:
        linux["uidMappings"] = [{"containerID": m.container_id, "hostID": m.host_id,
                                 "size": m.size} for m in spec.uid_mappings]
    if spec.gid_mappings:
        linux["gidMappings"] = [{"containerID": m.container_id, "hostID": m.host_id,
                                 "size": m.size} for m in spec.gid_mappings]
    if spec.sysctls:
        linux["sysctl"] = dict(spec.sysctls)
    if spec.seccomp.mode == "profile" and spec.seccomp.profile is not None:
        linux["seccomp"] = oci_seccomp(spec.seccomp.profile)
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "root": {"path": spec.root.path, "readonly": spec.root.readonly},
        "process": oci_process(spec.process),
        "mounts": [oci_mount(m) for m in spec.mounts],
        "linux": linux,
        "annotations": dict(spec.annotations),
    }
    if spec.hostname:
        config["hostname"] = spec.hostname
    return config
