"""Hypothesis strategies for spec and OCI config.json fuzzing.

Every field draws either a plausible value (so the validators behind it run)
or junk (any JSON value, wrong types, huge numbers, NUL, unhashable items), so a
generated document is sometimes valid, usually a little wrong, never only noise.

Settings: ``EXECDRIVER_FUZZ_EXAMPLES`` scales the example counts (a factor, 1 by
default); runs are derandomized (same examples every CI run) unless
``EXECDRIVER_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("EXECDRIVER_FUZZ_EXAMPLES", "1"))
RANDOM = bool(os.environ.get("EXECDRIVER_FUZZ_RANDOM"))


def fuzz_settings(examples: int, **kw: Any) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    derandomize=not RANDOM, print_blob=True,
                    suppress_health_check=list(HealthCheck), **kw)


# --- leaves ------------------------------------------------------------------------------

nasty_text = st.sampled_from(["", " ", "\0", "a\0b", "..", "/..", "../x", "/", "//", "\n",
                              "é", "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                              "x" * 300, "-1", "0", "9" * 400, "NaN", "1e999", "ALL", "all"])
small_text = st.text(max_size=12)
text = st.one_of(small_text, nasty_text)
big_ints = st.sampled_from([-(2 ** 70), -(2 ** 63), -(2 ** 31), -1, 0, 1, 2 ** 31 - 1, 2 ** 32 - 1,
                            2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 2 ** 64 - 1, 10 ** 40])
ints = st.one_of(st.integers(-5, 70000), big_ints)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, text)
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(small_text, inner, max_size=3)), max_leaves=6)


def maybe(plausible: st.SearchStrategy[Any], junk_weight: int = 1) -> st.SearchStrategy[Any]:
    """Mostly the plausible value, sometimes junk."""
    return st.one_of(*([plausible] * 4), *([junk] * junk_weight))


def obj(required: dict[str, st.SearchStrategy[Any]] | None = None,
        optional: dict[str, st.SearchStrategy[Any]] | None = None,
        rare: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Any]:
    """A dict with these keys (``optional`` ones sometimes); 1 time in 10 also some of the
    ``rare`` keys (refused-but-known fields) or an unknown key."""
    base = st.fixed_dictionaries(required or {}, optional=optional or {})
    extra = st.fixed_dictionaries({}, optional={**(rare or {}), "unknownField": junk})
    with_extra = st.tuples(base, extra).map(lambda t: {**t[0], **t[1]})
    return st.one_of(*([base] * 9), with_extra)


def lists(of: st.SearchStrategy[Any], max_size: int = 4) -> st.SearchStrategy[Any]:
    return maybe(st.lists(of, max_size=max_size))


paths = st.one_of(st.sampled_from(["/", "/tmp", "/proc", "/proc/self/fd/5", "/sys", "/dev/null",
                                   "/etc/passwd", "/nonexistent/x", "relative/x", "/a/../b",
                                   "/tmp/a\0b", "/" + "x" * 5000]),
                  st.text("/abc.\0", max_size=10))
cap_names = st.one_of(st.sampled_from(["CAP_NET_ADMIN", "net_admin", "NET_RAW", "CAP_SYS_ADMIN",
                                       "CAP_CHOWN", "CAP_SYS_CHROOT", "CAP_BOGUS", "ALL", "", "cap_"]),
                      junk)
sizes = st.one_of(ints, st.sampled_from(["64M", "1G", "512k", "1.5GiB", "0", "-1", "1e3", "9" * 400,
                                         "9" * 400 + "G", "1.5", "M", " 10 m ", "10MiBB", "1P"]))
signals = st.sampled_from(["KILL", "SIGTERM", "term", "9", "0", "65", "-1", "SIGBOGUS", "", "sigrtmin"])


# --- execdriver spec ------------------------------------------------------------------------

args = st.lists(st.sampled_from(["sh", "/bin/sh", "-c", "exit 3", "/bin/true", "x y"]), min_size=1,
                max_size=3)
rootfs_paths = st.sampled_from(["rootfs", "/abs/root", "/abs/root", "rootfs", "", "../up"])
env_items = st.one_of(st.sampled_from(["PATH=/bin", "A=b", "B=", "C=x=y"]),
                      st.sampled_from(["NOEQ", "=x", "A=\0"]))

NAMESPACE_TYPES = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time", "net", "mnt"]

process = obj(optional={
    "args": maybe(st.one_of(args, args, args, st.lists(text, max_size=3))),
    "env": maybe(st.one_of(st.dictionaries(text, text, max_size=3), st.lists(text, max_size=3))),
    "cwd": maybe(paths),
    "user": maybe(obj(optional={"uid": ints, "gid": ints, "additional_gids": lists(ints)})),
    "umask": maybe(ints),
    "terminal": maybe(st.booleans()),
    "stdin": maybe(st.booleans()),
    "rlimits": lists(obj(optional={"type": maybe(st.sampled_from(
        ["nofile", "RLIMIT_NPROC", "core", "bogus"])), "soft": ints, "hard": ints})),
    "capabilities": maybe(obj(optional={k: lists(cap_names) for k in (
        "bounding", "effective", "permitted", "inheritable", "ambient")})),
    "no_new_privileges": maybe(st.booleans()),
    "apparmor_profile": maybe(text),
    "oom_score_adj": maybe(ints),
    "preserve_fds": maybe(ints),
})

mounts = lists(obj(optional={
    "destination": maybe(paths), "type": maybe(st.sampled_from(
        ["bind", "proc", "tmpfs", "sysfs", "cgroup", "devpts", "bogusfs"])),
    "source": maybe(paths), "options": lists(st.one_of(st.sampled_from(
        ["ro", "rbind", "bind", "nosuid", "mode=755", "size=1k", "bogus"]), text)),
}))

resources = obj(optional={
    "memory": maybe(obj(optional={"limit": sizes, "reservation": sizes, "swap": sizes})),
    "cpu": maybe(obj(optional={"shares": ints, "quota": ints, "period": ints,
                               "cpus": maybe(st.sampled_from(["0", "0-1", "0,1", "1-0", "a", ""])),
                               "mems": maybe(st.sampled_from(["0", "0-", "x"]))})),
    "pids": maybe(obj(optional={"limit": ints})),
    "block_io": maybe(obj(optional={"weight": ints})),
    "devices": lists(obj(optional={"allow": maybe(st.booleans()), "type": maybe(st.sampled_from(
        ["a", "c", "b", "x"])), "major": ints, "minor": ints, "access": maybe(st.sampled_from(
            ["rwm", "r", "", "rwx", "mmm"]))})),
})

network = obj(optional={
    "mode": maybe(st.sampled_from(["none", "host", "bridge", "container", "netns", "bogus"])),
    "container": maybe(text), "netns_path": maybe(paths), "bridge": maybe(text),
    "subnet": maybe(st.sampled_from(["10.88.0.0/16", "10.0.0.1/8", "fd00::/64", "300.1.1.1/8",
                                     "x", "10.0.0.0/33"])),
    "addresses": lists(st.sampled_from(["10.88.0.5/16", "bad", "::1/128"])),
    "gateway": maybe(st.sampled_from(["10.88.0.1", "x"])), "mtu": maybe(ints),
    "routes": lists(obj(optional={"destination": maybe(text), "gateway": maybe(text)})),
    "ports": lists(obj(optional={"host_ip": maybe(st.sampled_from(["0.0.0.0", "::", "bad"])),
                                 "host_port": ints, "container_port": ints,
                                 "protocol": maybe(st.sampled_from(["tcp", "udp", "sctp"]))})),
    "dns": lists(text), "isolate": maybe(st.booleans()),
})

syscall_names = st.one_of(st.sampled_from(["read", "write", "mount", "keyctl", "bogus_call",
                                           "", "ptrace"]), junk)
seccomp = obj(optional={
    "mode": maybe(st.sampled_from(["default", "unconfined", "profile", "bogus"])),
    "profile": maybe(obj(optional={
        "default_action": maybe(st.sampled_from(["allow", "errno", "kill", "trap", "bogus"])),
        "default_errno": ints,
        "syscalls": lists(obj(optional={
            "names": lists(syscall_names), "action": maybe(st.sampled_from(
                ["allow", "errno", "kill", "log", "trace"])), "errno": ints,
            "args": lists(obj(optional={"index": ints, "value": ints, "value_two": ints,
                                        "op": maybe(st.sampled_from(["eq", "ne", "masked_eq",
                                                                     "bogus"]))}))})),
    })),
})

hooks = obj(optional={step: lists(obj(optional={"path": maybe(paths), "args": lists(text),
                                                 "env": lists(text), "timeout": ints}))
                      for step in ("prestart", "create_runtime", "create_container",
                                   "start_container", "poststart", "poststop")})

id_mappings = lists(obj(optional={"container_id": ints, "host_id": ints, "size": ints}))

spec_documents = obj(
    required={"root": maybe(obj(optional={"path": maybe(paths), "readonly": maybe(st.booleans())}))},
    optional={
        "version": maybe(text), "process": maybe(process), "hostname": maybe(text),
        "domainname": maybe(text), "mounts": mounts,
        "namespaces": lists(obj(optional={"type": maybe(st.sampled_from(NAMESPACE_TYPES)),
                                          "path": maybe(paths)})),
        "uid_mappings": id_mappings, "gid_mappings": id_mappings,
        "resources": maybe(resources), "network": maybe(network), "seccomp": maybe(seccomp),
        "masked_paths": lists(paths), "readonly_paths": lists(paths),
        "sysctls": maybe(st.dictionaries(st.sampled_from(["net.ipv4.ip_forward", "kernel.shmmax",
                                                          "a..b", "BAD", "fs/x"]), text, max_size=2)),
        "hooks": maybe(hooks), "annotations": maybe(st.dictionaries(text, text, max_size=2)),
    })


# --- OCI config.json ----------------------------------------------------------------------------

oci_caps = obj(optional={k: lists(cap_names) for k in
                         ("bounding", "effective", "permitted", "inheritable", "ambient")})
oci_process = obj(required={"args": maybe(st.one_of(args, args, args, st.lists(text, max_size=3)))},
                  optional={
    "terminal": maybe(st.booleans()), "cwd": maybe(st.one_of(st.just("/"), paths)),
    "env": lists(env_items),
    "rlimits": lists(obj(optional={"type": maybe(st.sampled_from(["RLIMIT_NOFILE", "RLIMIT_CORE",
                                                                  "bogus"])),
                                   "soft": ints, "hard": ints})),
    "apparmorProfile": maybe(text), "capabilities": maybe(oci_caps),
    "noNewPrivileges": maybe(st.booleans()), "oomScoreAdj": maybe(ints),
    "user": maybe(obj(optional={"uid": ints, "gid": ints, "umask": ints,
                                "additionalGids": lists(ints)}, rare={"username": text})),
}, rare={"consoleSize": junk, "commandLine": junk, "selinuxLabel": text, "scheduler": junk,
         "ioPriority": junk})
oci_mounts = lists(obj(optional={
    "destination": maybe(paths), "type": maybe(st.sampled_from(["bind", "proc", "tmpfs", "none"])),
    "source": maybe(paths),
    "options": lists(st.sampled_from(["rbind", "ro", "nosuid", "defaults", "rro", "idmap",
                                      "mode=755", "bogus"])),
    "uidMappings": junk,
}))
oci_seccomp = obj(optional={
    "defaultAction": maybe(st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_NOTIFY",
                                            "SCMP_ACT_KILL_PROCESS", "bogus"])),
    "defaultErrnoRet": ints,
    "architectures": lists(st.sampled_from(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_ARM"])),
    "flags": lists(text), "listenerPath": maybe(text),
    "syscalls": lists(obj(optional={
        "names": lists(syscall_names),
        "action": maybe(st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_LOG"])),
        "errnoRet": ints,
        "args": lists(obj(optional={"index": ints, "value": ints, "valueTwo": ints,
                                    "op": maybe(st.sampled_from(["SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ",
                                                                 "bogus"]))}))})),
})
oci_resources = obj(optional={
    "devices": lists(obj(optional={"allow": maybe(st.booleans()), "type": maybe(st.sampled_from(
        ["a", "c", "b", "p"])), "major": ints, "minor": ints, "access": maybe(st.sampled_from(
            ["rwm", "r", ""]))})),
    "memory": maybe(obj(optional={"limit": ints, "reservation": ints, "swap": ints, "kernel": ints,
                                  "swappiness": ints, "disableOOMKiller": maybe(st.booleans())})),
    "cpu": maybe(obj(optional={"shares": ints, "quota": ints, "period": ints, "burst": ints,
                               "cpus": maybe(st.sampled_from(["0", "0-1", "x"])),
                               "mems": maybe(st.sampled_from(["0", "x"]))})),
    "pids": maybe(obj(optional={"limit": ints})),
    "blockIO": maybe(obj(optional={"weight": ints, "leafWeight": ints})),
    "hugepageLimits": junk, "network": junk, "rdma": junk, "unified": junk,
})
oci_linux = obj(optional={
    "namespaces": lists(obj(optional={"type": maybe(st.sampled_from(NAMESPACE_TYPES)),
                                      "path": maybe(paths)})),
    "uidMappings": lists(obj(optional={"containerID": ints, "hostID": ints, "size": ints})),
    "gidMappings": lists(obj(optional={"containerID": ints, "hostID": ints, "size": ints})),
    "cgroupsPath": maybe(st.sampled_from(["/a/b", "system.slice:x:y", "a/../b", "", "/"])),
    "resources": maybe(oci_resources),
    "sysctl": maybe(st.dictionaries(st.sampled_from(["net.ipv4.ip_forward", "BAD", "a..b"]), junk,
                                    max_size=2)),
    "seccomp": maybe(oci_seccomp), "maskedPaths": lists(paths), "readonlyPaths": lists(paths),
    "rootfsPropagation": maybe(st.sampled_from(["rprivate", "shared", "slave", "bogus"])),
}, rare={"mountLabel": text, "devices": junk, "intelRdt": junk, "personality": junk,
         "timeOffsets": junk})
oci_hooks = obj(optional={step: lists(obj(optional={"path": maybe(paths), "args": lists(text),
                                                    "env": lists(text), "timeout": ints}))
                          for step in ("prestart", "createRuntime", "createContainer",
                                       "startContainer", "poststart", "poststop")})
oci_configs = st.one_of(junk, obj(
    required={"ociVersion": maybe(st.sampled_from(["1.0.2", "1.1.0", "1.2.0", "1.0.0", "0.9"])),
              "root": maybe(obj(optional={"path": maybe(rootfs_paths),
                                          "readonly": maybe(st.booleans())})),
              "process": maybe(oci_process)},
    optional={"mounts": oci_mounts, "hostname": maybe(text), "domainname": maybe(text),
              "annotations": maybe(st.dictionaries(text, junk, max_size=2)),
              "linux": maybe(oci_linux)},
    rare={"hooks": oci_hooks, "solaris": junk, "windows": junk, "vm": junk}))


# --- mutations of a valid document: mostly right, one to three things wrong --------------------

def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _apply(doc: Any, path: tuple[Any, ...], kind: str, value: Any) -> Any:
    import copy
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if kind == "delete":
        del parent[last]
    elif kind == "append" and isinstance(parent[last], list):
        parent[last].append(value)
    else:
        parent[last] = value
    return doc


def mutated(base: dict[str, Any], values: st.SearchStrategy[Any] = scalars | junk) -> st.SearchStrategy[Any]:
    """``base`` with 0-3 random edits (replace a value, delete a key, append to a list)."""
    paths = _paths(base)

    @st.composite
    def build(draw: Any) -> Any:
        doc = base
        for _ in range(draw(st.integers(0, 3))):
            current = _paths(doc)
            if not current:
                break
            path = draw(st.sampled_from(current))
            doc = _apply(doc, path, draw(st.sampled_from(["replace", "replace", "delete", "append"])),
                         draw(values))
        return doc
    assert paths
    return build()


def _spec_base() -> dict[str, Any]:
    from execdriver.spec import Spec
    data = Spec(root={"path": "/abs/root"}).model_dump()   # every field, every default
    data["resources"]["memory"]["limit"] = "64M"
    data["process"]["rlimits"] = [{"type": "nofile", "soft": 1024, "hard": 1024}]
    data["hostname"] = "box"
    data["seccomp"] = {"mode": "profile", "profile": {"default_action": "allow", "syscalls": [
        {"names": ["keyctl"], "action": "errno", "errno": 1,
         "args": [{"index": 0, "value": 1, "op": "eq"}]}]}}
    data["hooks"]["prestart"] = [{"path": "/bin/true", "args": ["true"], "env": ["A=b"]}]
    return data


def _oci_base() -> dict[str, Any]:
    from execdriver.oci.queries import default_config
    data = default_config()
    data["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO",
                                              "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
    data["linux"]["resources"]["memory"] = {"limit": 1 << 26}
    data["linux"]["uidMappings"] = []
    data["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=b"]}]}
    data["process"]["user"]["additionalGids"] = [10]
    return data


spec_documents = st.one_of(spec_documents, mutated(_spec_base()))
oci_configs = st.one_of(oci_configs, mutated(_oci_base()))


class Outcomes(dict[str, int]):
    """How often each outcome happened in a module's fuzz runs (printed at its end)."""

    def count(self, key: str) -> None:
        self[key] = self.get(key, 0) + 1

    def report_fixture(self, title: str) -> Any:
        """A module-scoped autouse fixture printing the counts; assign it to a module name."""
        @pytest.fixture(scope="module", autouse=True)
        def report_counts() -> Any:
            yield
            print(f"\n{title} fuzz outcomes: {dict(sorted(self.items()))}")
        return report_counts
