"""Table tests of the pure Spec -> OCI config.json translation (no root needed)."""

from __future__ import annotations

from typing import Any

import pytest

from execdriver.spec import Spec, validate_spec
from execdriver_runc_example.oci import to_oci_config


def spec_with(**changes: Any) -> Spec:
    d = Spec(root={"path": "/rootfs"}).model_dump()  # type: ignore[arg-type]
    for dotted, value in changes.items():
        target = d
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return validate_spec(d)


def get(config: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        config = config[int(key)] if isinstance(config, list) else config[key]
    return config


CASES = [
    # (spec changes, config path, expected value)
    ({}, "ociVersion", "1.0.2"),
    ({}, "root", {"path": "/rootfs", "readonly": False}),
    ({"root__readonly": True}, "root.readonly", True),
    ({"process__args": ["/bin/echo", "a b"]}, "process.args", ["/bin/echo", "a b"]),
    ({"process__env": {"A": "1", "B": "x=y"}}, "process.env", ["A=1", "B=x=y"]),
    ({"process__cwd": "/tmp"}, "process.cwd", "/tmp"),
    ({}, "process.user", {"uid": 0, "gid": 0, "umask": 0o022}),
    ({"process__user": {"uid": 5, "gid": 6, "additional_gids": [7]}}, "process.user",
     {"uid": 5, "gid": 6, "umask": 0o022, "additionalGids": [7]}),
    ({"process__umask": 0o077}, "process.user.umask", 0o077),
    ({"process__capabilities": {"bounding": ["net_admin"], "effective": [],
                                "permitted": ["CAP_NET_ADMIN"]}},
     "process.capabilities", {"bounding": ["CAP_NET_ADMIN"], "effective": [],
                              "permitted": ["CAP_NET_ADMIN"], "inheritable": [],
                              "ambient": []}),
    ({"process__rlimits": [{"type": "nofile", "soft": 10, "hard": 20}]}, "process.rlimits",
     [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]),
    ({"process__rlimits": [{"type": "RLIMIT_AS", "soft": 1, "hard": 1}]},
     "process.rlimits.0.type", "RLIMIT_AS"),
    ({}, "process.noNewPrivileges", True),
    ({"process__no_new_privileges": False}, "process.noNewPrivileges", False),
    ({"process__oom_score_adj": -5}, "process.oomScoreAdj", -5),
    ({"hostname": "box"}, "hostname", "box"),
    ({"mounts": [{"destination": "/data", "source": "/srv", "options": ["ro"]}]},
     "mounts", [{"destination": "/data", "type": "bind", "source": "/srv",
                 "options": ["ro", "rbind"]}]),
    ({"mounts": [{"destination": "/data", "source": "/srv", "options": ["bind"]}]},
     "mounts.0.options", ["bind"]),
    ({"mounts": [{"destination": "/t", "type": "tmpfs"}]}, "mounts.0.source", "tmpfs"),
    ({}, "linux.namespaces", [{"type": t} for t in
                              ("pid", "network", "ipc", "uts", "mount", "cgroup")]),
    ({"namespaces": [{"type": "net", "path": "/proc/1/ns/net"}], "network__mode": "netns",
      "network__netns_path": "/x"}, "linux.namespaces",
     [{"type": "network", "path": "/proc/1/ns/net"}]),
    ({"namespaces": [{"type": "user"}, {"type": "network"}],
      "uid_mappings": [{"container_id": 0, "host_id": 1000, "size": 10}],
      "gid_mappings": [{"container_id": 0, "host_id": 2000, "size": 10}]},
     "linux.gidMappings", [{"containerID": 0, "hostID": 2000, "size": 10}]),
    ({}, "linux.resources", {"devices": [{"allow": False, "access": "rwm"}]}),
    ({"resources__memory": {"limit": "64M", "swap": -1}}, "linux.resources.memory",
     {"limit": 64 << 20, "swap": -1}),
    ({"resources__cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"}},
     "linux.resources.cpu", {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"}),
    ({"resources__pids": {"limit": 9}}, "linux.resources.pids", {"limit": 9}),
    ({"resources__devices": [{"allow": True, "type": "c", "major": 10, "minor": 200}]},
     "linux.resources.devices.1", {"allow": True, "type": "c", "major": 10, "minor": 200,
                                   "access": "rwm"}),
    ({"masked_paths": ["/a"]}, "linux.maskedPaths", ["/a"]),
    ({"readonly_paths": []}, "linux.readonlyPaths", []),
    ({"sysctls": {"kernel.msgmax": "8192"}}, "linux.sysctl", {"kernel.msgmax": "8192"}),
    ({"seccomp": {"mode": "profile", "profile": {
        "default_action": "errno", "default_errno": 38,
        "syscalls": [{"names": ["read"], "action": "allow",
                      "args": [{"index": 0, "value": 3, "op": "masked_eq"}]},
                     {"names": ["mkdir"], "action": "errno"}]}}},
     "linux.seccomp", {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
         {"names": ["read"], "action": "SCMP_ACT_ALLOW",
          "args": [{"index": 0, "value": 3, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
         {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}),
    ({"annotations": {"k": "v"}}, "annotations", {"k": "v"}),
    ({}, "linux.cgroupsPath", "/cg"),
]


@pytest.mark.parametrize("changes,path,expected", CASES, ids=[c[1] for c in CASES])
def test_translation(changes: dict[str, Any], path: str, expected: Any) -> None:
    assert get(to_oci_config(spec_with(**changes), cgroups_path="/cg"), path) == expected


@pytest.mark.parametrize("changes,absent", [
    ({}, "hostname"),
    ({}, "linux.seccomp"),           # default and unconfined: no profile of ours
    ({"seccomp": {"mode": "unconfined"}}, "linux.seccomp"),
    ({}, "linux.sysctl"),
    ({}, "linux.uidMappings"),
    ({}, "process.oomScoreAdj"),
])
def test_absent_unless_asked(changes: dict[str, Any], absent: str) -> None:
    with pytest.raises(KeyError):
        get(to_oci_config(spec_with(**changes), cgroups_path="/cg"), absent)
