"""For each spec feature, a change that makes a spec ask for it.

The conformance suite applies these for features a driver does *not* declare,
and expects an UnsupportedFeature naming the feature before anything exists.
Each function edits a spec dict (``Spec.model_dump()``) in place; the result
is validated afresh, so intermediate states need not be valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec import Spec, features_used, validate_spec

SpecDict = dict[str, Any]

# Features no spec can switch on or off (always used, or verbs rather than fields).
NOT_REQUESTABLE = frozenset({"process.capabilities", "process.umask", "pause", "exec", "stats",
                             "checkpoint"})
VERB_FEATURES = ("pause", "exec", "stats")
_MAPPING = [{"container_id": 0, "host_id": 100000, "size": 65536}]


def _ns(d: SpecDict, ns_type: str, path: str | None = None) -> None:
    d["namespaces"] = [n for n in d["namespaces"] if n["type"] != ns_type]
    d["namespaces"].append({"type": ns_type, "path": path})


def _network(mode: str, **extra: Any) -> Callable[[SpecDict], None]:
    def change(d: SpecDict) -> None:
        if mode == "host":
            d["namespaces"] = [n for n in d["namespaces"] if n["type"] != "network"]
        else:  # every other mode needs a network namespace (netns/container: to join)
            _ns(d, "network")
        d["network"].update(mode=mode, **extra)
    return change


def _user_ns(d: SpecDict) -> None:
    _ns(d, "user")
    d["uid_mappings"] = list(_MAPPING)
    d["gid_mappings"] = list(_MAPPING)


def _namespace(ns_type: str) -> Callable[[SpecDict], None]:
    if ns_type == "network":
        return _network("none")
    return lambda d: _ns(d, ns_type)


def _uts_and(field: str, value: str) -> Callable[[SpecDict], None]:
    def change(d: SpecDict) -> None:
        _ns(d, "uts")
        d[field] = value
    return change


def _set(*path: str, value: Any) -> Callable[[SpecDict], None]:
    def change(d: SpecDict) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


FEATURE_REQUESTS: dict[str, Callable[[SpecDict], None]] = {
    **{f"namespaces.{t}": _namespace(t)
       for t in ("pid", "network", "mount", "ipc", "uts", "cgroup", "time")},
    "namespaces.user": _user_ns,
    "idmap": _user_ns,
    "namespaces.join": lambda d: _ns(d, "ipc", "/proc/1/ns/ipc"),
    "root.readonly": _set("root", "readonly", value=True),
    "mounts": lambda d: d["mounts"].append(
        {"destination": "/conformance", "type": "tmpfs", "source": "tmpfs", "options": []}),
    "hostname": _uts_and("hostname", "conformance"),
    "domainname": _uts_and("domainname", "conformance.example"),
    "process.user": _set("process", "user", value={"uid": 1000, "gid": 1000}),
    "process.rlimits": _set("process", "rlimits",
                            value=[{"type": "nofile", "soft": 1024, "hard": 1024}]),
    "process.no_new_privileges": _set("process", "no_new_privileges", value=True),
    "process.apparmor": _set("process", "apparmor_profile", value="conformance"),
    "process.oom_score_adj": _set("process", "oom_score_adj", value=100),
    "process.terminal": _set("process", "terminal", value=True),
    "process.preserve_fds": _set("process", "preserve_fds", value=1),
    "resources.memory": _set("resources", "memory", "limit", value=64 << 20),
    "resources.cpu": _set("resources", "cpu", "shares", value=512),
    "resources.cpuset": _set("resources", "cpu", "cpus", value="0"),
    "resources.pids": _set("resources", "pids", "limit", value=64),
    "resources.block_io": _set("resources", "block_io", "weight", value=500),
    "resources.devices": _set("resources", "devices", value=[
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]),
    "devices": _set("devices", value=[{"path": "/dev/conformance-null", "type": "c",
                                       "major": 1, "minor": 3}]),
    "network.none": _network("none"),
    "network.host": _network("host"),
    "network.bridge": _network("bridge"),
    "network.container": _network("container", container="conformance-other"),
    "network.netns": _network("netns", netns_path="/run/netns/conformance"),
    "network.ports": _network("bridge", ports=[{"host_port": 18080, "container_port": 80}]),
    "network.slirp4netns": _network("slirp4netns"),
    "seccomp.default": _set("seccomp", value={"mode": "default", "profile": None}),
    "seccomp.profile": _set("seccomp", value={"mode": "profile",
                                              "profile": {"default_action": "allow"}}),
    "masked_paths": _set("masked_paths", value=["/proc/kcore"]),
    "readonly_paths": _set("readonly_paths", value=["/proc/sys"]),
    "sysctls": _set("sysctls", value={"kernel.msgmax": "8192"}),
    "hooks": _set("hooks", "prestart", value=[{"path": "/bin/true"}]),
}


def request_feature(spec: Spec, feature: str) -> Spec:
    """A copy of ``spec`` that asks for ``feature`` (KeyError if no spec can)."""
    d = spec.model_dump()
    FEATURE_REQUESTS[feature](d)
    out = validate_spec(d)
    assert feature in features_used(out), f"request for {feature} did not take"
    return out
