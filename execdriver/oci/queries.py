"""list, ps, events, features, spec, update."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from ..errors import InvalidArgument, InvalidState, StepFailed
from ..libcontainer.update import FLAG_FIELDS, changes_from_flags, update_resources
from . import state

# --- list / ps --------------------------------------------------------------------

def list_states(root: str) -> list[dict[str, Any]]:
    from ..state import StateStore
    store = StateStore(root)
    out = []
    for name in store.ids():
        try:
            st = state.load(root, name).oci_state()
            # as runc: the owner is the user whose state directory it is
            st["owner"] = st.get("owner") or _user_name(os.stat(store.dir(name)).st_uid)
            out.append(st)
        except Exception:  # noqa: BLE001, S112 - a container removed meanwhile is not listed
            continue
    return out


def _user_name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def format_list(states: list[dict[str, Any]], fmt: str, quiet: bool) -> str:
    if quiet:
        return "".join(s["id"] + "\n" for s in states)
    if fmt == "json":
        return json.dumps(states) + "\n"
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root")
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in rows)


def container_pids(root: str, container_id: str) -> list[int]:
    """Every pid in the container's cgroup (sub-cgroups included)."""
    return state.load(root, container_id).pids()


def ps(root: str, container_id: str, fmt: str, ps_args: list[str]) -> str:
    pids = container_pids(root, container_id)
    if fmt == "json":
        return json.dumps(pids) + "\n"
    try:
        out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise StepFailed("ps", f"running ps failed: {exc}") from None
    lines = out.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise InvalidArgument("ps: the ps output has no PID column")
    col = header.index("PID")
    wanted = set(pids)
    keep = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            keep.append(line)
    return "\n".join(keep) + "\n"


# --- events -----------------------------------------------------------------------

def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise InvalidArgument(f"events --interval {text!r}: want a duration like 5s or 500ms")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def stats_event(values: dict[str, Any], container_id: str) -> dict[str, Any]:
    """runc's ``events --stats`` object, from the container's counters (Container.stats)."""
    def get(key: str) -> int:
        return int(values.get(key) or 0)
    data: dict[str, Any] = {
        "cpu": {"usage": {"total": get("cpu_usage_ns")}},
        "memory": {"usage": {"usage": get("memory_usage"), "max": get("memory_max_usage"),
                             "limit": get("memory_limit")}},
        "pids": {"current": get("pids_current"), "limit": get("pids_limit")},
        "blkio": {"ioServiceBytesRecursive": [
            {"op": "Read", "value": get("blkio_read_bytes")},
            {"op": "Write", "value": get("blkio_write_bytes")}]},
    }
    networks = values.get("networks") or {}
    if networks:
        data["network_interfaces"] = [
            {"name": name, **{k: int(n.get(k) or 0)
                              for k in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets")}}
            for name, n in sorted(networks.items())]
    return {"type": "stats", "id": container_id, "data": data}


def events(root: str, container_id: str, stats_once: bool, interval: float) -> None:
    while True:
        c = state.load(root, container_id)
        if c.status() == "stopped":
            if stats_once:
                raise InvalidState("container not running", container_id=container_id)
            return
        sys.stdout.write(json.dumps(stats_event(c.stats(), container_id)) + "\n")
        sys.stdout.flush()
        if stats_once:
            return
        time.sleep(interval)


# --- features / spec ------------------------------------------------------------------

def features() -> dict[str, Any]:
    """What this runtime supports, in runc's ``features`` format."""
    from .. import __version__
    from ..hooks import STEPS
    from ..kernel import syscall_table
    from ..kernel.mounts import KNOWN_OPTIONS
    from ..spec import CAPABILITIES
    from .config import NAMESPACES, SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_OPS
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state.OCI_VERSION,
        "hooks": list(STEPS),
        "mountOptions": sorted(KNOWN_OPTIONS),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False,
                       "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(SECCOMP_ACTIONS),
                        "operators": sorted(SECCOMP_OPS),
                        "archs": [SECCOMP_ARCHES[syscall_table.ARCH]],
                        "knownFlags": [], "supportedFlags": []},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {"io.github.execdriver.version": __version__,
                        "io.github.execdriver.driver": "native"},
    }


def default_config(rootless: bool = False) -> dict[str, Any]:
    """A config.json to start from (``spec``), like runc's but without a terminal;
    ``rootless``: for this unprivileged user (rootless_config)."""
    config = _default_config()
    return rootless_config(config) if rootless else config


def rootless_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` for an unprivileged user, as ``runc spec --rootless`` makes it: a user
    namespace mapping container root to the caller, no network namespace (a veth needs
    root: the host's network), /sys bound from the host (sysfs can only be mounted in
    a netns the user namespace owns), no gid= mount option (gid 5 is not mapped), no
    cgroup resources (nothing is delegated)."""
    linux = config.setdefault("linux", {})
    linux["namespaces"] = [n for n in linux.get("namespaces", [])
                           if n.get("type") not in ("network", "user")] + [{"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    linux.pop("resources", None)
    for m in config.get("mounts", []):
        if m.get("type") == "sysfs":
            m.update(type="none", source="/sys",
                     options=["rbind", "nosuid", "noexec", "nodev", "ro"])
        m["options"] = [o for o in m.get("options", []) if not o.startswith("gid=")]
    return config


def _default_config() -> dict[str, Any]:
    from ..spec import DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": state.OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "execdriver",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",  # noqa: S108 - a container path
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                  "cgroup")],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }


def write_spec(bundle: str, rootless: bool = False) -> str:
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        json.dump(default_config(rootless), f, indent="\t")
        f.write("\n")
    return path


# --- update ---------------------------------------------------------------------------

UPDATE_FLAGS = FLAG_FIELDS
_OCI_SECTIONS = {"memory": "memory", "cpu": "cpu", "pids": "pids", "blockIO": "block_io"}


def resource_changes(oci_resources: dict[str, Any] | None,
                     flags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} to change, from an OCI LinuxResources object and/or flags.

    Only what is given changes (0 or null: not given). A value that would
    remove a limit (-1, "unlimited") is refused: the cgroup layer only sets limits.
    """
    changes: dict[str, dict[str, Any]] = {}

    def refuse(where: str, value: Any) -> InvalidArgument:
        return InvalidArgument(f"update {where}={value}: removing a limit is not supported")
    if oci_resources is not None:
        from ..errors import SpecError
        from .config import _Problems, convert_resources
        if not isinstance(oci_resources, dict):
            raise InvalidArgument("update --resources: must be a JSON object")
        p = _Problems()
        convert_resources(oci_resources, "resources", p)      # refuses what we cannot do
        if p.lines:
            raise SpecError(p.lines)
        if oci_resources.get("devices"):
            raise InvalidArgument("update resources.devices: changing device rules is not supported")
        for oci_key, section, keys in (("memory", "memory", ("limit", "reservation", "swap")),
                                       ("cpu", "cpu", ("shares", "quota", "period")),
                                       ("pids", "pids", ("limit",)),
                                       ("blockIO", "block_io", ("weight",))):
            given = oci_resources.get(oci_key) or {}
            for key in keys:
                value = given.get(key)
                if value in (None, 0):
                    continue
                if value < 0 and not (section == "memory" and key == "swap"):
                    raise refuse(f"resources.{oci_key}.{key}", value)
                changes.setdefault(section, {})[key] = value
            if oci_key == "memory":     # 0 is a swappiness; -1 the kernel's (unset)
                if given.get("swappiness") not in (None, -1):
                    changes.setdefault("memory", {})["swappiness"] = given["swappiness"]
                if given.get("disableOOMKiller"):
                    changes.setdefault("memory", {})["disable_oom_killer"] = True
            if oci_key == "cpu":
                for key in ("cpus", "mems"):
                    if given.get(key):
                        changes.setdefault("cpu", {})[key] = given[key]
    for section, values in changes_from_flags(flags).items():
        changes.setdefault(section, {}).update(values)
    return changes


def update(root: str, container_id: str, changes: dict[str, dict[str, Any]]) -> None:
    """Apply resource changes to a live container's cgroup; keep them in its config and spec."""
    c = state.load(root, container_id)
    if c.status() == "stopped":
        raise InvalidState("container not running", container_id=container_id)   # runc's words
    update_resources(c, changes)
