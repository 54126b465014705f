"""config.json (OCI runtime-spec 1.x) -> execdriver Spec.

Pure functions, tested with tables. Every field of the runtime-spec is either
translated or refused with a problem line naming it (``linux.intelRdt: not
supported``); all problems come back together in one :class:`SpecError`.
Properties the runtime-spec does not define are ignored, as the spec demands
("runtimes MUST ignore unknown properties"); they are listed in
``Converted.ignored`` for the debug log.

OCI defaults differ from execdriver's safe defaults, and the OCI meaning wins:
an absent ``capabilities`` set is empty, ``noNewPrivileges`` is false, no
seccomp section means no filter, absent masked/read-only paths mean none.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..hooks import SPEC_FIELDS, STEPS
from .errors import JSONInputError

CONFIG_FILE = "config.json"

# Bounds on the JSON read from the user (config.json, exec --process, update
# --resources), checked before parsing: Python's parser recurses once per level
# (a deep file was a RecursionError) and reads the whole file into memory. runc
# has neither bound (Go's parser stops at 10000 levels). 16 MiB holds the largest
# config that can run: args + env at most what execve takes (6 MiB with any stack
# rlimit), mounts, a seccomp profile (tens of KiB) and annotations (Kubernetes
# allows 256 KiB of them). runtime-spec objects nest about 6 levels; 256 leaves
# room for extensions under unknown properties, well below the recursion limit.
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 256
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)    # unterminated: to the end
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")

_TOP = {"ociVersion", "root", "mounts", "process", "hostname", "domainname", "hooks",
        "annotations", "linux"}
_TOP_UNSUPPORTED = {"solaris": "Solaris containers", "windows": "Windows containers",
                    "vm": "virtual-machine containers", "zos": "z/OS containers"}
_PROCESS = {"terminal", "consoleSize", "cwd", "env", "args", "rlimits", "apparmorProfile",
            "capabilities", "noNewPrivileges", "oomScoreAdj", "selinuxLabel", "user"}
_PROCESS_UNSUPPORTED = {"commandLine": "Windows only", "scheduler": "not supported",
                        "ioPriority": "not supported", "execCPUAffinity": "not supported"}
_USER = {"uid", "gid", "umask", "additionalGids"}
_CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
_LINUX = {"namespaces", "uidMappings", "gidMappings", "cgroupsPath", "resources", "sysctl",
          "seccomp", "maskedPaths", "readonlyPaths", "rootfsPropagation", "mountLabel", "devices"}
_LINUX_UNSUPPORTED = {"timeOffsets", "intelRdt", "personality", "memoryPolicy", "netDevices"}
_RESOURCES = {"devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network",
              "rdma", "unified"}
_MEMORY = {"limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness",
           "disableOOMKiller", "useHierarchy", "checkBeforeUpdate"}
_CPU = {"shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus",
        "mems", "idle"}
_BLKIO = {"weight", "leafWeight", "weightDevice", "throttleReadBpsDevice",
          "throttleWriteBpsDevice", "throttleReadIOPSDevice", "throttleWriteIOPSDevice"}
_MOUNT = {"destination", "type", "source", "options"}
_MOUNT_UNSUPPORTED = {"uidMappings", "gidMappings"}
_HOOK = {"path", "args", "env", "timeout"}
NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

SECCOMP_ACTIONS = {
    "SCMP_ACT_ALLOW": "allow", "SCMP_ACT_ERRNO": "errno", "SCMP_ACT_KILL": "kill",
    "SCMP_ACT_KILL_THREAD": "kill", "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap", "SCMP_ACT_LOG": "log", "SCMP_ACT_TRACE": "trace",
}
SECCOMP_OPS = {
    "SCMP_CMP_NE": "ne", "SCMP_CMP_LT": "lt", "SCMP_CMP_LE": "le", "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge", "SCMP_CMP_GT": "gt", "SCMP_CMP_MASKED_EQ": "masked_eq",
}
SECCOMP_ARCHES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
_SECCOMP = {"defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath",
            "listenerMetadata", "syscalls"}



@dataclass
class Converted:
    """A config.json, translated."""

    spec: Any                                   # execdriver.spec.Spec
    cgroup_name: str | None = None
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    oci_version: str = ""
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    console_size: tuple[int, int] | None = None     # process.consoleSize (height, width)


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ignored: list[str] = []
        #: ignored, and worth a warning (runc warns about these too)
        self.warnings: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.lines.append(f"{where}: {why}")

    def check_keys(self, obj: dict[str, Any], where: str, known: set[str],
                   unsupported: dict[str, str] | set[str] | None = None) -> None:
        """Refuse known-but-unsupported keys (when set); note unknown ones."""
        for key, value in obj.items():
            name = f"{where}.{key}" if where else key
            if unsupported is not None and key in unsupported:
                if not _empty(value):
                    why = unsupported[key] if isinstance(unsupported, dict) else "not supported"
                    self.add(name, why)
            elif key not in known:
                self.ignored.append(f"{name}: unknown property")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {} or value is False


def _obj(value: Any, where: str, p: _Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        p.add(where, "must be an object")
        return {}
    return value


def _list(value: Any, where: str, p: _Problems) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        p.add(where, "must be an array")
        return []
    return value


def _strings(value: Any, where: str, p: _Problems) -> list[str]:
    items = _list(value, where, p)
    if not all(isinstance(item, str) for item in items):
        p.add(where, "must be an array of strings")
        return []
    return list(items)


def _int(value: Any, where: str, p: _Problems) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        p.add(where, "must be an integer")
        return None
    return value


# --- process ----------------------------------------------------------------

def convert_process(proc: dict[str, Any], where: str = "process",
                    p: _Problems | None = None) -> dict[str, Any]:
    """An OCI process object -> the execdriver Process fields (a dict).

    Also what ``exec --process FILE`` reads. Raises SpecError when called
    without a problem collector.
    """
    own = p is None
    p = p or _Problems()
    p.check_keys(proc, where, _PROCESS, _PROCESS_UNSUPPORTED)
    out: dict[str, Any] = {}
    args = proc.get("args")
    if not args:
        p.add(f"{where}.args", "required (the command to run)")
    elif not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        p.add(f"{where}.args", "must be an array of strings")
    else:
        out["args"] = list(args)
    env = _list(proc.get("env"), f"{where}.env", p)
    out["env"] = {}
    for i, item in enumerate(env):
        if not isinstance(item, str) or "=" not in item:
            p.add(f"{where}.env[{i}]", f"{item!r} is not KEY=VALUE")
            continue
        key, _, value = item.partition("=")
        out["env"][key] = value
    if "cwd" in proc:
        out["cwd"] = proc["cwd"]
    out["terminal"] = bool(proc.get("terminal", False))
    user = _obj(proc.get("user"), f"{where}.user", p)
    p.check_keys(user, f"{where}.user", _USER, {"username": "Windows only"})
    out["user"] = {"uid": user.get("uid", 0), "gid": user.get("gid", 0),
                   "additional_gids": list(_list(user.get("additionalGids"),
                                                 f"{where}.user.additionalGids", p))}
    if user.get("umask") is not None:
        out["umask"] = user["umask"]
    caps = _obj(proc.get("capabilities"), f"{where}.capabilities", p)
    p.check_keys(caps, f"{where}.capabilities", set(_CAP_SETS))
    out["capabilities"] = {s: _known_capabilities(_strings(caps.get(s),
                                                           f"{where}.capabilities.{s}", p),
                                                  f"{where}.capabilities.{s}", p)
                           for s in _CAP_SETS}
    # The kernel raises an ambient capability only if it is inheritable (and
    # permitted); runc's own default config lists ambient ones that are not,
    # and runc drops those. So do we, instead of refusing the config.
    allowed = set(out["capabilities"]["inheritable"]) & set(out["capabilities"]["permitted"])
    dropped = [c for c in out["capabilities"]["ambient"] if c not in allowed]
    if dropped:
        out["capabilities"]["ambient"] = [c for c in out["capabilities"]["ambient"] if c in allowed]
        p.ignored.append(f"{where}.capabilities.ambient: {', '.join(dropped)} not inheritable "
                         "and permitted, so not raised")
    rlimits = []
    for i, r in enumerate(_list(proc.get("rlimits"), f"{where}.rlimits", p)):
        r = _obj(r, f"{where}.rlimits[{i}]", p)
        p.check_keys(r, f"{where}.rlimits[{i}]", {"type", "soft", "hard"})
        rlimits.append({"type": r.get("type", ""), "soft": r.get("soft", 0), "hard": r.get("hard", 0)})
    out["rlimits"] = rlimits
    out["no_new_privileges"] = bool(proc.get("noNewPrivileges", False))
    # as runc: no apparmorProfile is no profile (the engine above names its default)
    out["apparmor_profile"] = proc.get("apparmorProfile") or "unconfined"
    if proc.get("oomScoreAdj") is not None:
        out["oom_score_adj"] = proc["oomScoreAdj"]
    if proc.get("selinuxLabel"):
        p.add(f"{where}.selinuxLabel", "SELinux is not supported (not enabled on this host)")
    if own and p.lines:
        raise SpecError(p.lines)
    return out


def _known_capabilities(names: list[str], where: str, p: _Problems) -> list[str]:
    """As runc: a capability this runtime does not know (a newer kernel's, a typo) is
    dropped with a warning, not a refused config. (execdriver's own spec refuses it.)"""
    from ..kernel.capnames import normalize_capability
    out = []
    for name in names:
        try:
            normalize_capability(name)
        except ValueError:
            p.warnings.append(f"{where}: unknown capability {name!r} ignored")
            continue
        out.append(name)
    return out


def convert_console_size(value: Any, where: str, p: _Problems) -> tuple[int, int] | None:
    """process.consoleSize -> (height, width); a terminal size is two unsigned shorts."""
    size = _obj(value, where, p)
    if not size:
        return None
    p.check_keys(size, where, {"height", "width"})
    out = []
    for key in ("height", "width"):
        n = _int(size.get(key), f"{where}.{key}", p) or 0
        if not 0 <= n <= 0xFFFF:
            p.add(f"{where}.{key}", "must be between 0 and 65535")
        out.append(n)
    return out[0], out[1]


# --- mounts -----------------------------------------------------------------

def convert_mount(m: dict[str, Any], where: str, bundle: str, p: _Problems) -> dict[str, Any] | None:
    p.check_keys(m, where, _MOUNT, dict.fromkeys(_MOUNT_UNSUPPORTED, "id-mapped mounts are not supported"))
    dest = m.get("destination")
    if not isinstance(dest, str) or not dest:
        p.add(f"{where}.destination", "required")
        return None
    if not dest.startswith("/"):
        dest = "/" + dest            # runtime-spec 1.1: relative to the container's /
    options = [o for o in _list(m.get("options"), f"{where}.options", p) if o != "defaults"]
    if not all(isinstance(o, str) for o in options):
        p.add(f"{where}.options", "must be an array of strings")
        return None
    is_bind = m.get("type") == "bind" or "bind" in options or "rbind" in options
    mtype = m.get("type") or ("bind" if is_bind else None)
    if not mtype:
        p.add(f"{where}.type", "required (unless options has bind or rbind)")
        return None
    from ..kernel.mounts import option_problems  # the spec's own check, named here
    for problem in option_problems("bind" if is_bind else mtype, options):
        p.add(f"{where}.options", problem)
    source = m.get("source")
    if is_bind and isinstance(source, str) and source and not os.path.isabs(source):
        source = os.path.normpath(os.path.join(bundle, source))
    return {"destination": dest, "type": "bind" if is_bind else mtype,
            "source": source, "options": options}


# --- linux ------------------------------------------------------------------

def _id_mappings(value: Any, where: str, p: _Problems) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(_list(value, where, p)):
        m = _obj(m, f"{where}[{i}]", p)
        p.check_keys(m, f"{where}[{i}]", {"containerID", "hostID", "size"})
        out.append({"container_id": m.get("containerID"), "host_id": m.get("hostID"),
                    "size": m.get("size")})
    return out


def convert_devices(rules: list[Any], where: str, p: _Problems) -> list[dict[str, Any]]:
    """OCI device cgroup rules -> execdriver DeviceRules.

    Our cgroup starts at deny-all plus the standard allow list (null, zero,
    full, random, urandom, tty, ptmx, pts) and then applies these rules; runc
    applies the config's rules and appends that same list. A config's deny-all
    rule therefore overrides everything before it and is itself implied: drop
    it and what precedes it.
    """
    parsed = []
    for i, r in enumerate(rules):
        r = _obj(r, f"{where}[{i}]", p)
        p.check_keys(r, f"{where}[{i}]", {"allow", "type", "major", "minor", "access"})
        if "allow" not in r:
            p.add(f"{where}[{i}].allow", "required")
            continue
        major, minor = r.get("major"), r.get("minor")
        rule = {"allow": bool(r["allow"]), "type": r.get("type") or "a",
                "major": None if major in (None, -1) else major,
                "minor": None if minor in (None, -1) else minor,
                "access": r.get("access") or "rwm"}
        parsed.append(rule)
    last_deny_all = -1
    for i, rule in enumerate(parsed):
        if (not rule["allow"] and rule["type"] == "a" and rule["major"] is None
                and rule["minor"] is None and set(str(rule["access"])) >= set("rwm")):
            last_deny_all = i
    return parsed[last_deny_all + 1:]


def convert_resources(res: dict[str, Any], where: str, p: _Problems) -> dict[str, Any]:
    p.check_keys(res, where, _RESOURCES, {
        "hugepageLimits": "hugetlb limits are not supported",
        "network": "net_cls/net_prio are not supported",
        "rdma": "rdma limits are not supported", "unified": "cgroup v2 unified keys are not supported"})
    out: dict[str, Any] = {}
    out["devices"] = convert_devices(_list(res.get("devices"), f"{where}.devices", p),
                                     f"{where}.devices", p)
    mem = _obj(res.get("memory"), f"{where}.memory", p)
    p.check_keys(mem, f"{where}.memory", _MEMORY, {"checkBeforeUpdate": "not supported"})
    for key in ("kernel", "kernelTCP"):
        if not _empty(mem.get(key)):
            # deprecated by the runtime spec and the kernel; runc ignores them too
            p.warnings.append(f"{where}.memory.{key}: kernel memory limits are deprecated; "
                              "ignored")
    memory: dict[str, Any] = {}
    for key in ("limit", "reservation"):
        v = _int(mem.get(key), f"{where}.memory.{key}", p)
        if v is not None and v > 0:            # 0 and -1: no limit
            memory[key] = v
    swap = _int(mem.get("swap"), f"{where}.memory.swap", p)
    if swap is not None and swap != 0:
        memory["swap"] = -1 if swap < 0 else swap
    swappiness = _int(mem.get("swappiness"), f"{where}.memory.swappiness", p)
    if swappiness is not None and swappiness != -1:      # -1: the kernel's (docker's unset)
        memory["swappiness"] = swappiness
    oom = mem.get("disableOOMKiller")
    if oom is not None and not isinstance(oom, bool):
        p.add(f"{where}.memory.disableOOMKiller", "must be a boolean")
    elif oom:
        memory["disable_oom_killer"] = True
    out["memory"] = memory
    cpu = _obj(res.get("cpu"), f"{where}.cpu", p)
    p.check_keys(cpu, f"{where}.cpu", _CPU, {
        "burst": "not supported", "realtimeRuntime": "realtime scheduling is not supported",
        "realtimePeriod": "realtime scheduling is not supported", "idle": "not supported"})
    cpu_out: dict[str, Any] = {}
    for key in ("shares", "quota", "period"):
        v = _int(cpu.get(key), f"{where}.cpu.{key}", p)
        if v is not None and v > 0:            # 0, and -1 for quota: unlimited
            cpu_out[key] = v
    for key in ("cpus", "mems"):
        if cpu.get(key):
            cpu_out[key] = cpu[key]
    out["cpu"] = cpu_out
    pids = _obj(res.get("pids"), f"{where}.pids", p)
    p.check_keys(pids, f"{where}.pids", {"limit"})
    limit = _int(pids.get("limit"), f"{where}.pids.limit", p)
    out["pids"] = {"limit": limit} if limit is not None and limit > 0 else {}
    blkio = _obj(res.get("blockIO"), f"{where}.blockIO", p)
    p.check_keys(blkio, f"{where}.blockIO", _BLKIO, dict.fromkeys(_BLKIO - {"weight"}, "not supported"))
    weight = _int(blkio.get("weight"), f"{where}.blockIO.weight", p)
    out["block_io"] = {"weight": weight} if weight else {}
    return out


def convert_seccomp(sec: dict[str, Any], where: str, p: _Problems) -> dict[str, Any]:
    from ..kernel import syscall_table
    p.check_keys(sec, where, _SECCOMP, {"flags": "seccomp filter flags are not supported",
                                        "listenerPath": "seccomp notify is not supported",
                                        "listenerMetadata": "seccomp notify is not supported"})
    arches = _list(sec.get("architectures"), f"{where}.architectures", p)
    native = SECCOMP_ARCHES.get(syscall_table.ARCH)
    if arches and native not in arches:
        p.add(f"{where}.architectures", f"must include {native} (the filter is for this "
                                         "machine's architecture)")

    def action(value: Any, at: str) -> str | None:
        if value is None:
            p.add(at, "required")
            return None
        if value == "SCMP_ACT_NOTIFY":
            p.add(at, "SCMP_ACT_NOTIFY is not supported")
            return None
        if not isinstance(value, str) or value not in SECCOMP_ACTIONS:
            p.add(at, f"unknown action {value!r}")
            return None
        return SECCOMP_ACTIONS[value]
    profile: dict[str, Any] = {"default_action": action(sec.get("defaultAction"),
                                                        f"{where}.defaultAction") or "errno"}
    if sec.get("defaultErrnoRet") is not None:
        profile["default_errno"] = sec["defaultErrnoRet"]
    rules = []
    for i, r in enumerate(_list(sec.get("syscalls"), f"{where}.syscalls", p)):
        at = f"{where}.syscalls[{i}]"
        r = _obj(r, at, p)
        p.check_keys(r, at, {"names", "action", "errnoRet", "args"})
        names = []
        for name in _strings(r.get("names"), f"{at}.names", p):
            if name in syscall_table.ALL_NAMES:
                names.append(name)
            else:    # runc skips syscalls libseccomp does not know; so do we
                p.ignored.append(f"{at}.names: unknown syscall {name!r}")
        act = action(r.get("action"), f"{at}.action")
        args = []
        for j, a in enumerate(_list(r.get("args"), f"{at}.args", p)):
            a = _obj(a, f"{at}.args[{j}]", p)
            p.check_keys(a, f"{at}.args[{j}]", {"index", "value", "valueTwo", "op"})
            op = SECCOMP_OPS.get(str(a.get("op")))
            if op is None:
                p.add(f"{at}.args[{j}].op", f"unknown operator {a.get('op')!r}")
                continue
            args.append({"index": a.get("index"), "value": a.get("value", 0),
                         "value_two": a.get("valueTwo", 0), "op": op})
        if names and act:
            rule: dict[str, Any] = {"names": names, "action": act, "args": args}
            if r.get("errnoRet") is not None:
                rule["errno"] = r["errnoRet"]
            rules.append(rule)
    profile["syscalls"] = rules
    return {"mode": "profile", "profile": profile}


def convert_namespaces(value: Any, where: str, p: _Problems) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(spec namespaces, spec network section)."""
    out = []
    network: dict[str, Any] = {"mode": "host"}
    for i, ns in enumerate(_list(value, where, p)):
        ns = _obj(ns, f"{where}[{i}]", p)
        p.check_keys(ns, f"{where}[{i}]", {"type", "path"})
        kind = ns.get("type")
        if kind not in NAMESPACES:
            p.add(f"{where}[{i}].type", f"unknown namespace type {kind!r}")
            continue
        entry: dict[str, Any] = {"type": kind}
        if ns.get("path"):
            entry["path"] = ns["path"]
        out.append(entry)
        if kind == "network":
            network = ({"mode": "netns", "netns_path": ns["path"]} if ns.get("path")
                       else {"mode": "none"})
    return out, network


def convert_cgroups_path(value: Any, where: str, p: _Problems) -> str | None:
    if not value:
        return None
    if not isinstance(value, str):
        p.add(where, "must be a string")
        return None
    if ":" in value:
        if value.count(":") != 2:
            p.add(where, f"{value!r} is neither a cgroup path like /parent/name nor a "
                         "systemd slice:prefix:name")
            return None
        return "systemd:" + value       # for --systemd-cgroup (lifecycle._cgroup_driver)
    name = value.strip("/")
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        p.add(where, f"{value!r} is not a cgroup path like /parent/name")
        return None
    return name


PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                "runbindable")


def convert_linux(linux: dict[str, Any], p: _Problems) -> tuple[dict[str, Any], str | None]:
    p.check_keys(linux, "linux", _LINUX, dict.fromkeys(_LINUX_UNSUPPORTED, "not supported"))
    out: dict[str, Any] = {}
    out["namespaces"], out["network"] = convert_namespaces(linux.get("namespaces"),
                                                           "linux.namespaces", p)
    out["uid_mappings"] = _id_mappings(linux.get("uidMappings"), "linux.uidMappings", p)
    out["gid_mappings"] = _id_mappings(linux.get("gidMappings"), "linux.gidMappings", p)
    cgroup = convert_cgroups_path(linux.get("cgroupsPath"), "linux.cgroupsPath", p)
    out["resources"] = convert_resources(_obj(linux.get("resources"), "linux.resources", p),
                                         "linux.resources", p)
    sysctl = _obj(linux.get("sysctl"), "linux.sysctl", p)
    for key, value in sysctl.items():
        if not isinstance(value, str):
            p.add(f"linux.sysctl.{key}", "must be a string")
    out["sysctls"] = {k: v for k, v in sysctl.items() if isinstance(v, str)}
    if linux.get("seccomp") is not None:
        out["seccomp"] = convert_seccomp(_obj(linux["seccomp"], "linux.seccomp", p),
                                         "linux.seccomp", p)
    else:
        out["seccomp"] = {"mode": "unconfined"}
    out["masked_paths"] = list(_list(linux.get("maskedPaths"), "linux.maskedPaths", p))
    out["readonly_paths"] = list(_list(linux.get("readonlyPaths"), "linux.readonlyPaths", p))
    prop = linux.get("rootfsPropagation")
    if prop:
        if prop in PROPAGATIONS:
            out["root_propagation"] = prop
        else:
            p.add("linux.rootfsPropagation", f"{prop!r} is not a propagation "
                                             f"({', '.join(PROPAGATIONS)})")
    if linux.get("mountLabel"):
        p.add("linux.mountLabel", "SELinux is not supported (not enabled on this host)")
    out["devices"] = convert_device_nodes(_list(linux.get("devices"), "linux.devices", p),
                                          "linux.devices", p)
    return out, cgroup


_DEVICE = {"path", "type", "major", "minor", "fileMode", "uid", "gid"}


def convert_device_nodes(devices: list[Any], where: str, p: _Problems) -> list[dict[str, Any]]:
    """OCI linux.devices -> spec devices. fileMode keeps only its permission bits (the
    type comes from ``type``); the spec validates paths and numbers."""
    out = []
    for i, d in enumerate(devices):
        at = f"{where}[{i}]"
        d = _obj(d, at, p)
        p.check_keys(d, at, _DEVICE)
        if not isinstance(d.get("path"), str) or not d["path"]:
            p.add(f"{at}.path", "required, an absolute path")
            continue
        if d.get("type") not in ("c", "b", "u", "p"):
            p.add(f"{at}.type", "required: c, b, u or p")
            continue
        node: dict[str, Any] = {"path": d["path"], "type": d["type"]}
        for key, name in (("major", "major"), ("minor", "minor"), ("fileMode", "file_mode"),
                          ("uid", "uid"), ("gid", "gid")):
            value = _int(d.get(key), f"{at}.{key}", p)
            if value is not None:
                node[name] = value & 0o7777 if key == "fileMode" else value
        out.append(node)
    return out


# --- hooks, whole config ---------------------------------------------------------

def convert_hooks(hooks: dict[str, Any], p: _Problems) -> dict[str, list[dict[str, Any]]]:
    p.check_keys(hooks, "hooks", set(STEPS))
    out: dict[str, list[dict[str, Any]]] = {}
    for step in STEPS:
        items = []
        for i, h in enumerate(_list(hooks.get(step), f"hooks.{step}", p)):
            at = f"hooks.{step}[{i}]"
            h = _obj(h, at, p)
            p.check_keys(h, at, _HOOK)
            path = h.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                p.add(f"{at}.path", "required, an absolute path")
                continue
            timeout = _int(h.get("timeout"), f"{at}.timeout", p)
            if timeout is not None and timeout <= 0:
                p.add(f"{at}.timeout", "must be an integer > 0")
                continue
            items.append({"path": path, "args": _strings(h.get("args"), f"{at}.args", p),
                          "env": _strings(h.get("env"), f"{at}.env", p), "timeout": timeout})
        if items:
            out[step] = items
    return out


def convert(config: Any, bundle: str) -> Converted:
    """Translate a parsed config.json; ``bundle`` anchors relative paths."""
    from ..spec import problems_from
    p = _Problems()
    if not isinstance(config, dict):
        raise SpecError(["config.json: must be a JSON object"])
    for key, what in _TOP_UNSUPPORTED.items():
        if config.get(key) is not None:
            p.add(key, f"{what} are not supported")
    p.check_keys({k: v for k, v in config.items() if k not in _TOP_UNSUPPORTED}, "", _TOP)
    version = config.get("ociVersion") or ""
    if version and not str(version).startswith("1."):
        p.add("ociVersion", f"{version!r} is not supported (runtime-spec 1.x only)")
    root = _obj(config.get("root"), "root", p)
    p.check_keys(root, "root", {"path", "readonly"})
    root_path = root.get("path")
    if not isinstance(root_path, str) or not root_path:
        p.add("root.path", "required")
        root_path = ""
    elif not os.path.isabs(root_path):
        root_path = os.path.normpath(os.path.join(bundle, root_path))
    data: dict[str, Any] = {"root": {"path": root_path, "readonly": bool(root.get("readonly"))}}
    console = None
    if config.get("process") is None:
        p.add("process", "required")
    else:
        proc = _obj(config["process"], "process", p)
        data["process"] = convert_process(proc, "process", p)
        console = convert_console_size(proc.get("consoleSize"), "process.consoleSize", p)
    for key in ("hostname", "domainname"):
        if config.get(key):
            data[key] = config[key]
    mounts = []
    for i, m in enumerate(_list(config.get("mounts"), "mounts", p)):
        conv = convert_mount(_obj(m, f"mounts[{i}]", p), f"mounts[{i}]", bundle, p)
        if conv is not None:
            mounts.append(conv)
    data["mounts"] = mounts
    linux, cgroup = convert_linux(_obj(config.get("linux"), "linux", p), p)
    propagation = linux.pop("root_propagation", None)
    if propagation:
        data["root"]["propagation"] = propagation
    data.update(linux)
    hooks = convert_hooks(_obj(config.get("hooks"), "hooks", p), p)
    data["hooks"] = {SPEC_FIELDS[step]: items for step, items in hooks.items()}
    annotations = _obj(config.get("annotations"), "annotations", p)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        p.add("annotations", "must map strings to strings")
    else:
        data["annotations"] = dict(annotations)
    if p.lines:
        raise SpecError(p.lines)
    from pydantic import ValidationError

    from ..spec import Spec
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from(exc)) from None
    return Converted(spec=spec, cgroup_name=cgroup, hooks=hooks, oci_version=str(version),
                     ignored=p.ignored, warnings=p.warnings, console_size=console)


def load_bundle(bundle: str) -> Converted:
    """Read and translate ``<bundle>/config.json``."""
    path = os.path.join(bundle, CONFIG_FILE)
    try:
        config = read_json(path, path)
    except JSONInputError as exc:
        raise SpecError([str(exc)]) from None
    return convert(config, os.path.abspath(bundle))


# --- reading the user's JSON ----------------------------------------------------------

def read_json(path: str, what: str) -> Any:
    """Parse the JSON file ``path`` ("-": stdin) within MAX_JSON_BYTES and
    MAX_JSON_DEPTH; JSONInputError("what: reason") when it cannot."""
    too_large = f"larger than {MAX_JSON_BYTES >> 20} MiB"
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_JSON_BYTES + 1)
        else:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_JSON_BYTES:
                    raise JSONInputError(what, too_large)
                # st_size is 0 for a pipe or a device: read one byte more than allowed
                data = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise JSONInputError(what, "no such file") from None
    except OSError as exc:
        raise JSONInputError(what, exc.strerror or str(exc)) from None
    if len(data) > MAX_JSON_BYTES:
        raise JSONInputError(what, too_large)
    return parse_json(data, what)


def parse_json(data: bytes, what: str) -> Any:
    """json.loads, refusing nesting deeper than MAX_JSON_DEPTH before it recurses."""
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise JSONInputError(what, f"not JSON ({exc.reason})") from None
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise JSONInputError(what, f"nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONInputError(what, f"not JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:     # e.g. an integer of 5000 digits
        raise JSONInputError(what, f"not JSON ({exc})") from None


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether the arrays and objects of ``text`` nest deeper than ``limit``
    (brackets in strings do not count). Linear, no recursion."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= limit:
        return False
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
