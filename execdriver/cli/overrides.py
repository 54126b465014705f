"""Docker-like flags applied to a spec.

Flags change the spec's JSON form (``model_dump()``), which is then validated
once, so every bad value is reported together: flag syntax problems as
``--flag: reason``, bad field values as ``field.path: reason``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from execdriver.errors import SpecError
from execdriver.spec import (
    MAX_CPU_QUOTA,
    MIN_CPU_QUOTA,
    Capabilities,
    PortMapping,
    Process,
    Spec,
    normalize_capability,
    problems_from,
    validate_spec,
)

CPU_PERIOD = 100_000  # microseconds; --cpus N means a quota of N periods


def build_run_spec(base: Spec, args: argparse.Namespace) -> Spec:
    """``base`` with the run flags in ``args`` applied; SpecError lists every problem."""
    data = base.model_dump()
    problems: list[str] = []
    apply_run_flags(data, args, problems)
    try:
        spec = validate_spec(data)
    except SpecError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return spec


def build_exec_process(base: Process, args: argparse.Namespace, rootfs: str | None) -> Process:
    """The container's process settings with the exec flags applied."""
    from pydantic import ValidationError

    data = base.model_dump()
    problems: list[str] = []
    apply_process_flags(data, args, problems, rootfs)
    try:
        proc = Process.model_validate(data)
    except ValidationError as exc:
        for line in problems_from(exc):  # "cwd: ..." -> "process.cwd: ..."
            problems.append("process" + line[4:] if line.startswith("spec:") else "process." + line)
    if problems:
        raise SpecError(problems)
    return proc


def apply_run_flags(data: dict[str, Any], args: argparse.Namespace, problems: list[str]) -> None:
    if getattr(args, "rootfs", None):
        data["root"]["path"] = os.path.abspath(args.rootfs)
    if args.read_only:
        data["root"]["readonly"] = True
    proc = data["process"]
    if args.command:
        proc["args"] = list(args.command)
    apply_process_flags(proc, args, problems, data["root"]["path"])
    if args.hostname is not None:
        data["hostname"] = args.hostname
        if not any(ns["type"] == "uts" for ns in data["namespaces"]):
            data["namespaces"].append({"type": "uts", "path": None})  # as --network does for netns
    res = data["resources"]
    if args.memory is not None:
        res["memory"]["limit"] = args.memory
    if getattr(args, "memory_swappiness", None) not in (None, -1):     # -1: docker's unset
        res["memory"]["swappiness"] = args.memory_swappiness
    if getattr(args, "oom_kill_disable", False):
        res["memory"]["disable_oom_killer"] = True
    if args.cpus is not None:
        quota = cpu_quota(args.cpus, problems)
        if quota is not None:
            res["cpu"]["quota"], res["cpu"]["period"] = quota, CPU_PERIOD
    if args.pids_limit is not None:
        res["pids"]["limit"] = args.pids_limit
    if args.cap_add or args.cap_drop:
        apply_capabilities(proc, args.cap_add, args.cap_drop, problems)
    for text in args.volume:
        mount = parse_volume(text, problems)
        if mount is not None:
            data["mounts"] = [m for m in data["mounts"] if m["destination"] != mount["destination"]]
            data["mounts"].append(mount)
    if args.network is not None:
        apply_network(data, args.network, problems)
    for text in args.publish:
        try:
            data["network"]["ports"].append(PortMapping.parse(text).model_dump())
        except ValueError as exc:
            problems.append(f"--publish: {_reason(exc)}")
    apply_docker_flags(data, args, problems)
    apply_device_flags(data, args, problems)


def _flag(args: argparse.Namespace, name: str) -> list[str]:
    """A repeatable flag's values ([] when the namespace lacks it: built by a caller)."""
    return list(getattr(args, name, None) or [])


def _pairs(items: list[str], flag: str, problems: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(f"{flag}: {item!r} is not KEY=VALUE")
        else:
            out.append((key, value))
    return out


def apply_docker_flags(data: dict[str, Any], args: argparse.Namespace,
                       problems: list[str]) -> None:
    """--tmpfs, --ulimit, --sysctl, --cpuset-cpus, --dns, --annotation, --security-opt."""
    proc = data["process"]
    for text in _flag(args, "tmpfs"):
        dest, _, opts = text.partition(":")
        if not dest.startswith("/"):
            problems.append(f"--tmpfs: {text!r}: the destination must be an absolute path")
            continue
        options = ["nosuid", "nodev", "noexec"] + [o for o in opts.split(",") if o]
        data["mounts"] = [m for m in data["mounts"] if m["destination"] != dest]
        data["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                               "options": options})
    for text in _flag(args, "mount"):
        mount = parse_mount(text, problems)
        if mount is not None:
            data["mounts"] = [m for m in data["mounts"] if m["destination"] != mount["destination"]]
            data["mounts"].append(mount)
    for name, value in _pairs(_flag(args, "ulimit"), "--ulimit", problems):
        soft, _, hard = value.partition(":")
        try:
            limit = {"type": name, "soft": int(soft), "hard": int(hard or soft)}
        except ValueError:
            problems.append(f"--ulimit: {name}={value}: SOFT and HARD must be numbers")
            continue
        def plain(n: str) -> str:
            return n.strip().lower().removeprefix("rlimit_")
        proc["rlimits"] = [r for r in proc["rlimits"] if plain(r["type"]) != plain(name)]
        proc["rlimits"].append(limit)
    for key, value in _pairs(_flag(args, "sysctl"), "--sysctl", problems):
        data["sysctls"][key] = value
    cpuset = getattr(args, "cpuset_cpus", None)
    if cpuset is not None:
        data["resources"]["cpu"]["cpus"] = cpuset
    if _flag(args, "dns"):
        data["network"]["dns"] = list(_flag(args, "dns"))
    for key, value in _pairs(_flag(args, "annotation"), "--annotation", problems):
        data["annotations"][key] = value
    for opt in _flag(args, "security_opt"):
        apply_security_opt(data, opt, problems)


def apply_device_flags(data: dict[str, Any], args: argparse.Namespace,
                       problems: list[str]) -> None:
    """--device HOST[:CONTAINER][:PERMS] and --privileged (docker's, last: they win)."""
    from dataclasses import asdict

    from execdriver.kernel.devices import host_device, host_devices
    for text in _flag(args, "device"):
        parsed = parse_device(text, problems)
        if parsed is None:
            continue
        host, container, perms = parsed
        try:
            node = asdict(host_device(host, container))
        except ValueError as exc:
            problems.append(f"--device: {text!r}: {host}: {exc}")
            continue
        data["devices"] = [d for d in data["devices"] if d["path"] != node["path"]] + [node]
        data["resources"]["devices"].append({"allow": True, "type": node["type"],
                                             "major": node["major"], "minor": node["minor"],
                                             "access": perms})
    if not getattr(args, "privileged", False):
        return
    taken = {d["path"] for d in data["devices"]}
    data["devices"] += [asdict(d) for d in host_devices() if d.path not in taken]
    data["resources"]["devices"].append({"allow": True, "type": "a", "major": None,
                                         "minor": None, "access": "rwm"})
    from execdriver.kernel.capabilities import mask_to_names, read_status_caps
    # every capability the runtime itself holds (this host's root lacks some)
    everything = mask_to_names(read_status_caps()["CapBnd"])
    data["process"]["capabilities"].update(
        {k: list(everything) for k in ("bounding", "effective", "permitted")})
    data["seccomp"] = {"mode": "unconfined", "profile": None}
    data["process"]["apparmor_profile"] = "unconfined"      # (docker's privileged too)
    data["masked_paths"], data["readonly_paths"] = [], []
    for m in data["mounts"]:
        if m["type"] == "sysfs":
            m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]


def parse_device(text: str, problems: list[str]) -> tuple[str, str | None, str] | None:
    """docker's ``HOST[:CONTAINER][:PERMS]`` -> (host, container or None, perms)."""
    parts = text.split(":")
    if len(parts) == 2 and parts[1] and not parts[1].startswith("/") and not set(parts[1]) - set("rwm"):
        parts = [parts[0], "", parts[1]]            # HOST:PERMS
    if len(parts) > 3 or not parts[0]:
        problems.append(f"--device: {text!r} is not HOST[:CONTAINER][:PERMS]")
        return None
    host, container, perms = (parts + ["", ""])[:3]
    if not host.startswith("/"):
        problems.append(f"--device: {text!r}: the host path must be absolute")
        return None
    if container and not container.startswith("/"):
        problems.append(f"--device: {text!r}: the container path must be absolute")
        return None
    if len(parts) == 3 and (not perms or set(perms) - set("rwm")):
        problems.append(f"--device: {text!r}: PERMS must be letters from r, w, m")
        return None
    return host, container or None, perms or "rwm"


_MOUNT_KEYS = {"type", "source", "src", "target", "destination", "dst", "readonly", "ro",
               "tmpfs-size", "tmpfs-mode", "bind-propagation"}


def parse_mount(text: str, problems: list[str]) -> dict[str, Any] | None:
    """docker's --mount: type=bind,source=S,target=T[,readonly] or type=tmpfs,target=T,..."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if key not in _MOUNT_KEYS:
            problems.append(f"--mount: {text!r}: unknown key {key!r}")
            return None
        fields[key] = value if sep else "true"
    kind = fields.get("type", "volume")
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not target or not target.startswith("/"):
        problems.append(f"--mount: {text!r}: target must be an absolute path")
        return None
    readonly = fields.get("readonly", fields.get("ro", "false")) in ("true", "1")
    if kind == "bind":
        source = fields.get("source") or fields.get("src")
        if not source or not os.path.exists(source):
            problems.append(f"--mount: {text!r}: source must be an existing host path")
            return None
        options = ["rbind", fields.get("bind-propagation", "rprivate")] + (["ro"] if readonly else [])
        return {"destination": target, "type": "bind", "source": os.path.abspath(source),
                "options": options}
    if kind == "tmpfs":
        options = ["nosuid", "nodev", "noexec"] + (["ro"] if readonly else [])
        if "tmpfs-size" in fields:
            options.append(f"size={fields['tmpfs-size']}")
        if "tmpfs-mode" in fields:
            options.append(f"mode={fields['tmpfs-mode']}")
        return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options}
    problems.append(f"--mount: {text!r}: type {kind!r} is not supported (bind or tmpfs)")
    return None


def apply_security_opt(data: dict[str, Any], opt: str, problems: list[str]) -> None:
    key, _, value = opt.replace(":", "=", 1).partition("=")
    if key == "no-new-privileges" and value in ("", "true", "false"):
        data["process"]["no_new_privileges"] = value != "false"
    elif key == "seccomp" and value == "unconfined":
        data["seccomp"] = {"mode": "unconfined", "profile": None}
    elif key == "seccomp" and value:
        try:
            import json
            profile = json.loads(Path(value).read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"--security-opt seccomp={value}: {_reason(exc)}")
            return
        data["seccomp"] = {"mode": "profile", "profile": profile}
    elif key == "apparmor" and value:
        data["process"]["apparmor_profile"] = value     # "unconfined": no profile, not the default
    else:
        problems.append(f"--security-opt: {opt!r} is not one of no-new-privileges[=true|false], "
                        "seccomp=unconfined|FILE, apparmor=PROFILE")


def apply_process_flags(proc: dict[str, Any], args: argparse.Namespace, problems: list[str],
                        rootfs: str | None) -> None:
    """--env-file, -e, -w, -u, -t, -i (shared by run and exec); -e after --env-file."""
    for path in getattr(args, "env_file", None) or []:
        try:
            lines = Path(path).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--env-file {path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if sep and key:
                proc["env"][key] = value
            elif key in os.environ:      # (as -e KEY: the caller's value)
                proc["env"][key] = os.environ[key]
            elif not sep:
                continue
            else:
                problems.append(f"--env-file {path}:{n}: {line!r} is not KEY=VALUE")
    for item in args.env:
        key, sep, value = item.partition("=")
        if sep:
            proc["env"][key] = value
        elif item in os.environ:  # docker: -e KEY passes the caller's value through
            proc["env"][key] = os.environ[item]
    if args.workdir is not None:
        proc["cwd"] = args.workdir
    if args.user is not None:
        try:
            proc["user"]["uid"], proc["user"]["gid"] = parse_user(args.user, rootfs)
        except ValueError as exc:
            problems.append(f"--user: {exc}")
    if args.tty:
        proc["terminal"] = True
    if args.interactive:
        proc["stdin"] = True


def _reason(exc: Exception) -> str:
    text = str(exc).split("\n")[0]
    return text.removeprefix("Value error, ")


def cpu_quota(text: str, problems: list[str]) -> int | None:
    try:
        cpus = float(text)
    except ValueError:
        problems.append(f"--cpus: {text!r} is not a number")
        return None
    if not (cpus > 0 and math.isfinite(cpus)):
        problems.append("--cpus: must be a number > 0")
        return None
    # the kernel's quota range, said in CPUs (cpus * CPU_PERIOD may even overflow to inf)
    low, high = MIN_CPU_QUOTA / CPU_PERIOD, MAX_CPU_QUOTA // CPU_PERIOD
    if not low <= cpus <= high:
        problems.append(f"--cpus: must be between {low:g} and {high}")
        return None
    return round(cpus * CPU_PERIOD)


def apply_capabilities(proc: dict[str, Any], add: list[str], drop: list[str],
                       problems: list[str]) -> None:
    bad = False
    for flag, names in (("--cap-add", add), ("--cap-drop", drop)):
        for name in names:
            if name.strip().upper() == "ALL":
                continue
            try:
                normalize_capability(name)
            except ValueError as exc:
                problems.append(f"{flag}: {exc}")
                bad = True
    if bad:
        return
    caps = Capabilities.model_validate(proc["capabilities"]).with_changes(add, drop)
    proc["capabilities"] = caps.model_dump()


def parse_volume(text: str, problems: list[str]) -> dict[str, Any] | None:
    """``SRC:DST[:ro|rw]`` -> a recursive bind mount of the (existing) host path SRC."""
    parts = text.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        problems.append(f"--volume: {text!r} is not SRC:DST[:ro]")
        return None
    src, dst = parts
    if not os.path.exists(src):
        problems.append(f"--volume: {src}: no such file or directory")
        return None
    options = ["rbind"] + (["ro"] if mode == "ro" else [])
    return {"destination": dst, "type": "bind", "source": os.path.abspath(src), "options": options}


def apply_network(data: dict[str, Any], mode: str, problems: list[str]) -> None:
    """none | host | bridge | slirp4netns[:allow_host_loopback=true] | container:<id> |
    ns:<path>."""
    net = data["network"]
    namespaces = data["namespaces"]
    has_netns = any(ns["type"] == "network" for ns in namespaces)
    kind, _, value = mode.partition(":")
    if mode in ("none", "bridge"):
        net["mode"] = mode
        if not has_netns:
            namespaces.append({"type": "network", "path": None})
    elif kind == "slirp4netns" and value in ("", "allow_host_loopback=true",
                                             "allow_host_loopback=false"):
        net["mode"], net["host_loopback"] = "slirp4netns", value.endswith("=true")
        if not has_netns:
            namespaces.append({"type": "network", "path": None})
    elif mode == "host":
        net["mode"] = "host"
        data["namespaces"] = [ns for ns in namespaces if ns["type"] != "network"]
    elif kind == "container" and value:
        net["mode"], net["container"] = "container", value
    elif kind == "ns" and value:
        net["mode"], net["netns_path"] = "netns", value
    else:
        problems.append(f"--network: {mode!r} is not none, host, bridge, "
                        "slirp4netns[:allow_host_loopback=true], container:<id> or ns:<path>")


def parse_user(text: str, rootfs: str | None) -> tuple[int, int]:
    """``UID[:GID]`` (numbers, or names from the rootfs's /etc/passwd and /etc/group).

    Without a group, the user's primary group from passwd, else 0 (as docker does).
    """
    user, sep, group = text.partition(":")
    if not user or (sep and not group):
        raise ValueError(f"{text!r} is not UID[:GID]")
    passwd = _read_db(rootfs, "etc/passwd")
    primary: int | None = None
    if user.isdigit():
        uid = int(user)
        for fields in passwd:
            if len(fields) > 3 and fields[2] == user and fields[3].isdigit():
                primary = int(fields[3])
                break
    else:
        for fields in passwd:
            if fields[0] == user and len(fields) > 3 and fields[2].isdigit() and fields[3].isdigit():
                uid, primary = int(fields[2]), int(fields[3])
                break
        else:
            raise ValueError(f"no user {user!r} in the rootfs's /etc/passwd")
    if not group:
        return uid, primary or 0
    if group.isdigit():
        return uid, int(group)
    for fields in _read_db(rootfs, "etc/group"):
        if fields[0] == group and len(fields) > 2 and fields[2].isdigit():
            return uid, int(fields[2])
    raise ValueError(f"no group {group!r} in the rootfs's /etc/group")


def _read_db(rootfs: str | None, rel: str) -> list[list[str]]:
    if not rootfs:
        return []
    try:
        text = (Path(rootfs) / rel).read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
