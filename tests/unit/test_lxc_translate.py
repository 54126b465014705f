"""Spec -> LXC config translation, as tables (no root, no liblxc)."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any

import pytest

from execdriver.spec import DEFAULT_PATH, Spec, validate_spec
from execdriver_lxc.paths import cwd_problem, mount_targets, resolve_in_root
from execdriver_lxc.translate import (
    HostFacts,
    cgroup_names,
    cgroup_ro_hook,
    cwd_check_hook,
    fstab_escape,
    init_cmd_word,
    seccomp_profile,
    spec_to_config,
    unsupported,
)

LXCPATH = "/run/state/c1/lxc"
CDIR = LXCPATH + "/c1"


def make(**changes: Any) -> Spec:
    """The default spec with top-level sections updated (dicts are merged one level deep)."""
    data = Spec(root={"path": "/srv/rootfs"}).model_dump()  # type: ignore[arg-type]
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate_spec(data)


def config(spec: Spec, version: int = 1, **kw: Any) -> list[tuple[str, str]]:
    kw.setdefault("source_is_dir", lambda p: not p.endswith(".conf"))
    return spec_to_config(spec, "c1", LXCPATH, version, **kw)


def values(items: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in items if k == key]


def entries(items: list[tuple[str, str]]) -> list[str]:
    return values(items, "lxc.mount.entry")


NAMES = cgroup_names("c1", LXCPATH)
ALL_NS = "pid net ipc uts mnt cgroup"

# (case, spec changes, key, expected values of that key)
SIMPLE = [
    ("rootfs", {}, "lxc.rootfs.path", ["dir:/srv/rootfs"]),
    ("rootfs never deleted by liblxc", {}, "lxc.rootfs.managed", ["0"]),
    ("log in the state dir", {}, "lxc.log.file", [CDIR + "/lxc.log"]),
    ("no hostname", {}, "lxc.uts.name", []),
    ("hostname", {"hostname": "box"}, "lxc.uts.name", ["box"]),
    ("command", {"process": {"args": ["sh", "-c", "echo hi"]}}, "lxc.init.cmd", ["sh -c 'echo hi'"]),
    ("command with both quotes", {"process": {"args": ["sh", "-c", "echo \"it's\""]}},
     "lxc.init.cmd", []),
    ("cwd", {"process": {"cwd": "/tmp"}}, "lxc.init.cwd", ["/tmp"]),
    ("uid", {"process": {"user": {"uid": 1000, "gid": 5}, "capabilities": {
        "effective": [], "permitted": []}}}, "lxc.init.uid", ["1000"]),
    ("gid", {"process": {"user": {"uid": 0, "gid": 5}}}, "lxc.init.gid", ["5"]),
    ("groups", {"process": {"user": {"additional_gids": [10, 20]}}}, "lxc.init.groups", ["10,20"]),
    ("no groups", {}, "lxc.init.groups", []),
    ("env, PATH and HOME added", {"process": {"env": {"A": "1", "B": "x y"}}}, "lxc.environment",
     ["A=1", "B=x y", f"PATH={DEFAULT_PATH}", "HOME=/root"]),
    ("env keeps HOME", {"process": {"env": {"HOME": "/h"}}}, "lxc.environment",
     ["HOME=/h", f"PATH={DEFAULT_PATH}"]),
    ("env keeps PATH", {"process": {"env": {"PATH": "/p"}}}, "lxc.environment",
     ["PATH=/p", "HOME=/root"]),
    ("no caps", {"process": {"capabilities": {"bounding": [], "effective": [], "permitted": []}}},
     "lxc.cap.keep", ["none"]),
    ("caps by name, new ones by number", {"process": {"capabilities": {
        "bounding": ["CAP_CHOWN", "CAP_BPF"], "effective": ["CAP_CHOWN", "CAP_BPF"],
        "permitted": ["CAP_CHOWN", "CAP_BPF"]}}}, "lxc.cap.keep", ["chown 39"]),
    ("no_new_privs", {}, "lxc.no_new_privs", ["1"]),
    ("no_new_privs off", {"process": {"no_new_privileges": False}}, "lxc.no_new_privs", ["0"]),
    ("apparmor", {"process": {"apparmor_profile": "p1"}}, "lxc.apparmor.profile", ["p1"]),
    ("seccomp file", {}, "lxc.seccomp.profile", [CDIR + "/seccomp"]),
    ("seccomp unconfined", {"seccomp": {"mode": "unconfined"}}, "lxc.seccomp.profile", []),
    ("rlimit", {"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]}},
     "lxc.prlimit.nofile", ["10:20"]),
    ("rlimit unlimited", {"process": {"rlimits": [{"type": "core", "soft": 0,
                                                    "hard": 2**64 - 1}]}},
     "lxc.prlimit.core", ["0:unlimited"]),
    ("oom_score_adj", {"process": {"oom_score_adj": 500}}, "lxc.proc.oom_score_adj", ["500"]),
    ("namespaces", {}, "lxc.namespace.clone", [ALL_NS]),
    ("time namespace", {"namespaces": [{"type": t} for t in
                                       ("pid", "network", "mount", "time")]},
     "lxc.namespace.clone", ["pid net mnt time"]),
    ("join by path", {"namespaces": [{"type": "mount"}, {"type": "network"},
                                     {"type": "uts", "path": "/proc/7/ns/uts"}]},
     "lxc.namespace.share.uts", ["/proc/7/ns/uts"]),
    ("idmap", {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "user"}],
               "uid_mappings": [{"container_id": 0, "host_id": 1000, "size": 10}],
               "gid_mappings": [{"container_id": 0, "host_id": 2000, "size": 5}]},
     "lxc.idmap", ["u 0 1000 10", "g 0 2000 5"]),
    ("network none", {}, "lxc.net.0.type", ["empty"]),
    ("network host", {"network": {"mode": "host"},
                      "namespaces": [{"type": "mount"}, {"type": "pid"}]},
     "lxc.net.0.type", ["none"]),
    ("sysctl", {"sysctls": {"net.ipv4.ip_forward": "1"}}, "lxc.sysctl.net.ipv4.ip_forward", ["1"]),
    ("sysctl with slashes", {"sysctls": {"net/core/somaxconn": "64"}},
     "lxc.sysctl.net.core.somaxconn", ["64"]),
    ("domainname is a sysctl", {"domainname": "ex.org"}, "lxc.sysctl.kernel.domainname", ["ex.org"]),
    ("cgroup placement", {}, "lxc.cgroup.dir.container", [NAMES.container]),
    ("monitor cgroup", {}, "lxc.cgroup.dir.monitor", [NAMES.monitor]),
    ("no console", {}, "lxc.console.path", ["none"]),
    ("no autodev", {}, "lxc.autodev", ["0"]),
    ("hooks by env", {}, "lxc.hook.version", ["1"]),
]


@pytest.mark.parametrize("case,changes,key,expected", SIMPLE, ids=[c[0] for c in SIMPLE])
def test_simple_keys(case, changes, key, expected):
    assert values(config(make(**changes)), key) == expected


V1 = [
    ({"memory": {"limit": "64M"}}, [("memory.limit_in_bytes", str(64 << 20))]),
    ({"memory": {"limit": "64M", "swap": "128M"}},
     [("memory.limit_in_bytes", str(64 << 20)), ("memory.memsw.limit_in_bytes", str(128 << 20))]),
    ({"memory": {"swap": -1}}, [("memory.memsw.limit_in_bytes", "-1")]),
    ({"memory": {"reservation": "16M"}}, [("memory.soft_limit_in_bytes", str(16 << 20))]),
    ({"cpu": {"shares": 512}}, [("cpu.shares", "512")]),
    ({"cpu": {"quota": 50000, "period": 100000}},
     [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]),
    ({"cpu": {"cpus": "0-1", "mems": "0"}}, [("cpuset.cpus", "0-1"), ("cpuset.mems", "0")]),
    ({"pids": {"limit": 10}}, [("pids.max", "10")]),
    ({"block_io": {"weight": 500}}, [("blkio.weight", "500")]),
]
V2 = [
    ({"memory": {"limit": "64M"}}, [("memory.max", str(64 << 20))]),
    ({"memory": {"limit": "64M", "swap": "128M"}},
     [("memory.max", str(64 << 20)), ("memory.swap.max", str(64 << 20))]),
    ({"memory": {"limit": "64M", "swap": -1}}, [("memory.max", str(64 << 20)),
                                                 ("memory.swap.max", "max")]),
    ({"memory": {"reservation": "16M"}}, [("memory.low", str(16 << 20))]),
    ({"cpu": {"shares": 1024}}, [("cpu.weight", "39")]),
    ({"cpu": {"quota": 50000, "period": 200000}}, [("cpu.max", "50000 200000")]),
    ({"cpu": {"period": 200000}}, [("cpu.max", "max 200000")]),
    ({"cpu": {"quota": 50000}}, [("cpu.max", "50000 100000")]),
    ({"pids": {"limit": 10}}, [("pids.max", "10")]),
    ({"block_io": {"weight": 10}}, [("io.weight", "1")]),
]


def limits(items: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    return [(k[len(prefix):], v) for k, v in items if k.startswith(prefix)
            and not k.startswith("lxc.cgroup.dir") and not k[len(prefix):].startswith("devices.")]


@pytest.mark.parametrize("resources,expected", V1)
def test_cgroup_v1_limits(resources, expected):
    assert limits(config(make(resources=resources), 1), "lxc.cgroup.") == expected
    assert not [k for k, _ in config(make(resources=resources), 1) if k.startswith("lxc.cgroup2.")]


@pytest.mark.parametrize("resources,expected", V2)
def test_cgroup_v2_limits(resources, expected):
    assert limits(config(make(resources=resources), 2), "lxc.cgroup2.") == expected


@pytest.mark.parametrize("version,prefix", [(1, "lxc.cgroup."), (2, "lxc.cgroup2.")])
def test_device_rules_deny_all_then_defaults_then_the_specs(version, prefix):
    spec = make(resources={"devices": [{"allow": True, "type": "c", "major": 10, "minor": 200,
                                        "access": "rw"},
                                       {"allow": False, "type": "b", "major": 8}]})
    rules = [(k.removeprefix(prefix), v) for k, v in config(spec, version)
             if k.startswith(prefix + "devices.")]
    assert rules[0] == ("devices.deny", "a")
    assert ("devices.allow", "c 1:3 rwm") in rules and ("devices.allow", "c 136:* rwm") in rules
    assert rules[-2:] == [("devices.allow", "c 10:200 rw"), ("devices.deny", "b 8:* rwm")]


def test_default_mounts():
    got = entries(config(make()))
    # the driver makes the targets in the rootfs; liblxc only inside the /dev tmpfs
    assert got[:9] == [
        "proc proc proc nosuid,noexec,nodev 0 0",
        "tmpfs dev tmpfs nosuid,strictatime,mode=755,size=65536k 0 0",
        "/dev/null dev/null none bind,create=file 0 0",
        "/dev/zero dev/zero none bind,create=file 0 0",
        "/dev/full dev/full none bind,create=file 0 0",
        "/dev/random dev/random none bind,create=file 0 0",
        "/dev/urandom dev/urandom none bind,create=file 0 0",
        "/dev/tty dev/tty none bind,create=file 0 0",
        "devpts dev/pts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,create=dir 0 0",
    ]
    assert got[9] == "dev/pts/ptmx dev/ptmx none bind,relative,create=file 0 0"
    assert "sysfs sys sysfs nosuid,noexec,nodev,ro 0 0" in got
    assert "shm dev/shm tmpfs nosuid,noexec,nodev,mode=1777,size=65536k,create=dir 0 0" in got
    assert values(config(make()), "lxc.mount.auto") == ["cgroup:ro:force"]


# targets in the rootfs are made by the driver: no create= for liblxc
MOUNTS = [
    ({"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["ro"]},
     "/srv/data data none bind,ro 0 0"),
    ({"destination": "/etc/app.conf", "source": "/srv/app.conf", "options": ["rbind"]},
     "/srv/app.conf etc/app.conf none rbind 0 0"),
    ({"destination": "/my data", "type": "bind", "source": "/srv/a b\\c"},
     "/srv/a\\040b\\134c my\\040data none bind 0 0"),
    ({"destination": "/run", "type": "tmpfs", "options": ["size=1m"]},
     "tmpfs run tmpfs size=1m 0 0"),
    ({"destination": "/mnt/", "type": "tmpfs", "source": "mytmp"},
     "mytmp mnt tmpfs defaults 0 0"),
]


@pytest.mark.parametrize("mount,entry", MOUNTS)
def test_mount_entries(mount, entry):
    assert entries(config(make(mounts=[mount], masked_paths=[], readonly_paths=[]))) == [entry]


@pytest.mark.parametrize("options", [["ro"], [], ["rw", "nosuid"]])
def test_cgroup_mount_is_always_read_only(options):
    spec = make(mounts=[{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                         "options": options}])
    assert values(config(spec), "lxc.mount.auto") == ["cgroup:ro:force"]


def test_masked_and_readonly_paths():
    got = entries(config(make(mounts=[], masked_paths=["/proc/kcore"],
                              readonly_paths=["/proc/sys"])))
    assert got == ["/dev/null proc/kcore none bind,optional 0 0",
                   "tmpfs proc/kcore tmpfs ro,nosuid,nodev,noexec,optional 0 0",
                   "proc/sys proc/sys none bind,relative,ro,optional 0 0"]


def test_readonly_root_is_the_last_mount_hook():
    spec = make(root={"path": "/srv/rootfs", "readonly": True},
                hooks={"create_container": [{"path": "/h", "args": ["h", "a b"]}]})
    assert values(config(spec, mount_binary="/usr/bin/mount"), "lxc.hook.mount") == [
        cgroup_ro_hook("/usr/bin/mount"), "/h 'a b'",
        '/usr/bin/mount -o remount,bind,ro "$LXC_ROOTFS_MOUNT"']
    assert values(config(make()), "lxc.hook.mount") == [cgroup_ro_hook("/bin/mount")]
    assert not [v for k, v in config(make(mounts=[])) if k == "lxc.hook.mount"]


def test_cgroup_tmpfs_is_remounted_read_only_by_the_first_mount_hook():
    """liblxc leaves the tmpfs it mounts the hierarchies in writable, even with cgroup:ro."""
    hook = cgroup_ro_hook("/bin/mount")
    assert shlex.split(hook) == ["/bin/mount", "-o", "remount,bind,ro,nosuid,nodev,noexec",
                                 "$LXC_ROOTFS_MOUNT/sys/fs/cgroup"]
    spec = make(hooks={"create_container": [{"path": "/h"}]})
    assert values(config(spec), "lxc.hook.mount") == [hook, "/h"]
    no_cgroup = make(mounts=[m for m in make().model_dump()["mounts"] if m["type"] != "cgroup"])
    assert values(config(no_cgroup), "lxc.mount.auto") == []
    assert hook not in values(config(no_cgroup), "lxc.hook.mount")


def test_hooks():
    spec = make(hooks={
        "prestart": [{"path": "/p"}],
        "create_runtime": [{"path": "/r", "args": ["r", "x"], "env": ["A=1"], "timeout": 3}],
        "start_container": [{"path": "/in/container"}],
        "poststop": [{"path": "/s"}]})
    items = config(spec)
    assert values(items, "lxc.hook.start-host") == [
        cwd_check_hook("/", CDIR), "/p", "timeout -s KILL 3 env -i A=1 /r x"]
    assert values(items, "lxc.hook.start") == ["/in/container"]
    assert values(items, "lxc.hook.post-stop") == ["/s"]
    oom = values(items, "lxc.hook.stop")
    assert len(oom) == 1 and f"/sys/fs/cgroup/memory/{NAMES.container}/memory.oom_control" in oom[0]
    assert f"/sys/fs/cgroup/{NAMES.container}/memory.events" in values(config(spec, 2),
                                                                        "lxc.hook.stop")[0]


def test_key_order_puts_limits_before_mounts():
    keys = [k for k, _ in config(make(resources={"memory": {"limit": "64M"}}))]
    assert keys.index("lxc.rootfs.path") < keys.index("lxc.cgroup.memory.limit_in_bytes") \
        < keys.index("lxc.mount.entry") < keys.index("lxc.hook.version")


def test_no_value_has_a_newline():
    for _k, v in config(make()):
        assert "\n" not in v


def test_cgroup_names_differ_per_lxcpath_and_id():
    a, b, c = cgroup_names("x", "/s1/x/lxc"), cgroup_names("x", "/s2/x/lxc"), \
        cgroup_names("y", "/s1/y/lxc")
    assert len({a.container, b.container, c.container, a.monitor}) == 4
    assert a.container.startswith("execdriver-lxc.x.") and a.pivot == b.pivot


# --- what LXC cannot express ------------------------------------------------------

UNSUPPORTED_CASES = [
    ("no mount namespace", {"namespaces": [{"type": "pid"}, {"type": "network"}]},
     "namespaces.mount"),
    ("joined mount namespace", {"namespaces": [{"type": "mount", "path": "/proc/1/ns/mnt"},
                                               {"type": "network"}]}, "namespaces.mount"),
    ("inheritable caps", {"process": {"capabilities": {"inheritable": ["CAP_CHOWN"]}}},
     "inheritable"),
    ("root with effective != bounding", {"process": {"capabilities": {
        "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]}}}, "effective = permitted"),
    ("non-root with effective caps", {"process": {"user": {"uid": 1000}}}, "non-root"),
    ("host sysctl", {"sysctls": {"vm.swappiness": "1"}}, "not namespaced"),
    ("net sysctl without own netns", {"sysctls": {"net.ipv4.ip_forward": "1"},
                                      "network": {"mode": "host"},
                                      "namespaces": [{"type": "mount"}]}, "network namespace"),
    ("sysctl with readonly /proc/sys", {"sysctls": {"kernel.shmmax": "1"}}, "readonly_paths"),
    ("domainname with readonly /proc/sys", {"domainname": "x.org"}, "readonly_paths"),
    ("mixed sysctl separators", {"sysctls": {"net.ipv4/conf": "1"}}, "mixes"),
    ("mount over root", {"mounts": [{"destination": "/", "type": "tmpfs"}]}, "over the root"),
    ("cgroup elsewhere", {"mounts": [{"destination": "/cg", "type": "cgroup"}]}, "/sys/fs/cgroup"),
    ("relative bind source", {"mounts": [{"destination": "/d", "source": "rel/dir"}]}, "absolute"),
    ("env with newline", {"process": {"env": {"A": "1\n2"}}}, "newline"),
    ("seccomp log action", {"seccomp": {"mode": "profile", "profile": {
        "default_action": "log"}}}, "default_action"),
    ("seccomp kill_process rule", {"seccomp": {"mode": "profile", "profile": {
        "syscalls": [{"names": ["read"], "action": "kill_process"}]}}}, "syscalls[0]"),
    ("poststart hook", {"hooks": {"poststart": [{"path": "/x"}]}}, "hooks.poststart"),
    ("start hook with args", {"hooks": {"start_container": [{"path": "/x", "args": ["x", "y"]}]}},
     "start hooks by path"),
    ("dns in mode none", {"network": {"dns": ["1.1.1.1"]}}, "need mode bridge"),
    ("apparmor without AppArmor", {"process": {"apparmor_profile": "p"}}, "AppArmor"),
]


@pytest.mark.parametrize("case,changes,needle", UNSUPPORTED_CASES,
                         ids=[c[0] for c in UNSUPPORTED_CASES])
def test_unsupported(case, changes, needle):
    problems = unsupported(make(**changes))
    assert any(needle in p for p in problems), problems


HOST_CASES = [
    (HostFacts(memsw=False), {"resources": {"memory": {"limit": "1G", "swap": "2G"}}}, "memsw"),
    (HostFacts(io_weight=False), {"resources": {"block_io": {"weight": 100}}}, "io weight"),
    (HostFacts(cgroup_version=2), {"resources": {"devices": [{"allow": False, "type": "c"}]}},
     "deny rules"),
    (HostFacts(subuid=((100000, 65536),), subgid=((100000, 65536),)),
     {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "user"}],
      "uid_mappings": [{"container_id": 0, "host_id": 200000, "size": 10}],
      "gid_mappings": [{"container_id": 0, "host_id": 100000, "size": 10}]}, "/etc/subuid"),
]


@pytest.mark.parametrize("host,changes,needle", HOST_CASES)
def test_unsupported_on_this_host(host, changes, needle):
    spec = make(**changes)
    assert any(needle in p for p in unsupported(spec, host))
    good = HostFacts(memsw=True, io_weight=True, cgroup_version=1, subuid=None, subgid=None)
    assert not unsupported(spec, good)


SUPPORTED = [
    ("default", {}),
    ("non-root with bounding only", {"process": {"user": {"uid": 1000},
                                                 "capabilities": {"effective": [],
                                                                  "permitted": []}}}),
    ("sysctl without readonly /proc/sys", {"sysctls": {"net.ipv4.ip_forward": "1"},
                                           "readonly_paths": []}),
    ("delegated idmap", {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "user"}],
                         "uid_mappings": [{"container_id": 0, "host_id": 100000, "size": 10}],
                         "gid_mappings": [{"container_id": 0, "host_id": 100000, "size": 10}]}),
    ("seccomp profile", {"seccomp": {"mode": "profile", "profile": {
        "default_action": "errno", "syscalls": [{"names": ["read"], "action": "trap"}]}}}),
]


@pytest.mark.parametrize("case,changes", SUPPORTED, ids=[c[0] for c in SUPPORTED])
def test_supported(case, changes):
    host = HostFacts(subuid=((100000, 65536),), subgid=((100000, 65536),))
    assert unsupported(make(**changes), host) == []


# --- encoders and seccomp -----------------------------------------------------------

@pytest.mark.parametrize("arg,word", [
    ("sh", "sh"), ("a b", "'a b'"), ("", "''"), ("it's", "it's"), ("it's me", '"it\'s me"'),
    ("'q", '"\'q"'), ('"q', "'\"q'"), ("a\tb", "'a\tb'"), ("x'\" y", None)])
def test_init_cmd_word(arg, word):
    assert init_cmd_word(arg) == word


@pytest.mark.parametrize("field,escaped", [
    ("/a b", "/a\\040b"), ("t\tn\n", "t\\011n\\012"), ("back\\slash", "back\\134slash"),
    ("plain", "plain")])
def test_fstab_escape(field, escaped):
    assert fstab_escape(field) == escaped


def test_seccomp_default_is_the_native_profile():
    from execdriver.kernel.seccomp_default import ALLOWED, DEFAULT_PROFILE
    text = seccomp_profile(make())
    assert text is not None
    lines = text.splitlines()
    # ENOSYS by default (a syscall newer than the table), the profile's EPERM by name
    assert lines[:2] == ["2", "allowlist errno 38"]
    assert DEFAULT_PROFILE.default_errno == 1
    assert "read allow" in lines and "mount allow" not in lines and "mount errno 1" in lines
    assert len([ln for ln in lines if ln.endswith(" allow")]) >= len(ALLOWED)
    assert "clone allow [0,0,SCMP_CMP_MASKED_EQ,2114060288]" in lines
    # clone3's ENOSYS is the default's: libseccomp refuses a rule with the default action
    assert not [ln for ln in lines if ln.startswith("clone3 ")]
    # where no condition matches, EPERM again, after every condition of the syscall
    assert lines.index("clone errno 1 [0,0,SCMP_CMP_GE]") > \
        lines.index("clone allow [0,0,SCMP_CMP_MASKED_EQ,2114060288]")
    assert "socket errno 1 [0,0,SCMP_CMP_GE]" in lines
    assert "personality errno 1 [0,0,SCMP_CMP_GE]" in lines


def test_seccomp_every_syscall_of_the_table_is_decided_by_name():
    """Only what the table does not know falls to LXC's default (ENOSYS), as in the native
    compiler; everything it knows gets the profile's answer, once."""
    from execdriver.kernel.syscall_table import SYSCALLS
    lines = seccomp_profile(make()).splitlines()[2:]
    named = {ln.split()[0] for ln in lines}
    assert named == set(SYSCALLS) - {"clone3"}
    unconditional = [ln.split()[0] for ln in lines if "[" not in ln]
    assert len(unconditional) == len(set(unconditional))
    table = {"read": 0, "write": 1, "mount": 165, "brand_new": 999}
    assert seccomp_profile(make(), table).splitlines()[-2:] == ["mount errno 1",
                                                                 "brand_new errno 1"]


def test_seccomp_profile_translation():
    spec = make(seccomp={"mode": "profile", "profile": {
        "default_action": "allow",
        "syscalls": [
            {"names": ["mount", "umount2"], "action": "errno"},
            {"names": ["personality"], "action": "errno", "errno": 22,
             "args": [{"index": 0, "value": 8, "op": "ne"}, {"index": 1, "value": 1, "op": "gt"}]},
            {"names": ["kexec_load"], "action": "kill"},
            {"names": ["ioctl"], "action": "trap",
             "args": [{"index": 1, "value": 255, "value_two": 4, "op": "masked_eq"}]}]}})
    table = {"read": 0, "ioctl": 16, "personality": 135, "mount": 165, "umount2": 166,
             "kexec_load": 246}
    assert seccomp_profile(spec, table) == (
        "2\nallowlist errno 38\nmount errno 1\numount2 errno 1\n"
        "personality errno 22 [0,8,SCMP_CMP_NE] [1,1,SCMP_CMP_GT]\n"
        "kexec_load kill\nioctl trap [1,4,SCMP_CMP_MASKED_EQ,255]\n"
        # the profile's default: where no condition matched, then for the rest of the table
        "personality allow [0,0,SCMP_CMP_GE]\nioctl allow [1,0,SCMP_CMP_GE]\nread allow\n")


@pytest.mark.parametrize("rules, expected", [
    # first match wins: an unconditional rule after conditional ones answers where they do
    # not match (written as a condition that always holds: it would wipe them in libseccomp)
    ([{"names": ["clone"], "action": "allow", "args": [{"index": 2, "value": 5, "op": "eq"}]},
      {"names": ["clone"], "action": "kill", "args": [{"index": 1, "value": 7, "op": "lt"}]},
      {"names": ["clone"], "action": "trap"},
      {"names": ["clone"], "action": "allow"}],                      # dead
     ["clone allow [2,5,SCMP_CMP_EQ]", "clone kill [1,7,SCMP_CMP_LT]",
      "clone trap [1,0,SCMP_CMP_GE]"]),
    # ENOSYS is the default: unconditional, it is left to it
    ([{"names": ["clone"], "action": "errno", "errno": 38}], []),
    ([{"names": ["clone"], "action": "allow", "args": [{"index": 0, "value": 1, "op": "eq"}]},
      {"names": ["clone"], "action": "errno", "errno": 38}],
     ["clone allow [0,1,SCMP_CMP_EQ]"]),
    # else the profile's default (EPERM here)
    ([{"names": ["clone"], "action": "allow", "args": [{"index": 3, "value": 1, "op": "eq"}]}],
     ["clone allow [3,1,SCMP_CMP_EQ]", "clone errno 1 [3,0,SCMP_CMP_GE]"]),
    # a condition that always holds is there already: no second one (libseccomp: EEXIST)
    ([{"names": ["clone"], "action": "allow", "args": [{"index": 0, "value": 0, "op": "ge"}]}],
     ["clone allow [0,0,SCMP_CMP_GE]"]),
])
def test_seccomp_fallthrough_keeps_first_match_order(rules, expected):
    spec = make(seccomp={"mode": "profile", "profile": {
        "default_action": "errno", "syscalls": rules}})
    assert seccomp_profile(spec, {"clone": 56}).splitlines()[2:] == expected


def test_seccomp_conditional_enosys_is_refused():
    spec = make(seccomp={"mode": "profile", "profile": {"default_action": "errno", "syscalls": [
        {"names": ["clone"], "action": "errno", "errno": 38,
         "args": [{"index": 0, "value": 1, "op": "eq"}]}]}})
    assert any(p.startswith("seccomp.profile.syscalls[0]: LXC cannot answer ENOSYS under a "
                            "condition") for p in unsupported(spec))


def test_seccomp_unconfined():
    assert seccomp_profile(make(seccomp={"mode": "unconfined"})) is None


# --- the working directory (CVE-2024-21626) ------------------------------------

# symlinks of a fake image: container path -> target
IMAGE = {
    "/abs": "/etc",
    "/rel": "../../../../etc",
    "/host": "/work/somewhere/on/the/host",
    "/up": "../../../../..",
    "/escape": "/proc/self/fd/7",
    "/escape-rel": "../../proc/self/fd/7",
    "/etc/chain": "/abs/../escape",
    "/loop": "/loop",
    "/devfd": "/dev/fd/7",
}


def image_readlink(host_path: str) -> str | None:
    """readlink of a host path in the fake image at /srv/rootfs or the bind source /srv/data."""
    for prefix, links in (("/srv/rootfs", IMAGE), ("/srv/data", {"/link": "/proc/self/fd/8",
                                                                  "/ok": "/etc"})):
        if host_path.startswith(prefix + "/"):
            return links.get(host_path[len(prefix):])
    raise AssertionError(f"read outside the rootfs and the bind sources: {host_path}")


@pytest.mark.parametrize("path, expected", [
    ("/", "/"), ("/etc/../tmp/./x", "/tmp/x"), ("/../../..", "/"), ("/abs", "/etc"),
    ("/abs/passwd", "/etc/passwd"), ("/rel", "/etc"), ("/up", "/"), ("/up/../x", "/x"),
    ("/host", "/work/somewhere/on/the/host"), ("/escape", "/proc/self/fd/7"),
    ("/etc/chain", "/proc/self/fd/7"), ("/loop", None),
])
def test_resolve_in_root(path, expected):
    assert resolve_in_root(path, IMAGE.get) == expected


def cwd_spec(cwd: str, mounts: list[dict[str, Any]] | None = None) -> Spec:
    spec = make(process={"cwd": cwd})
    if mounts:
        spec = make(process={"cwd": cwd}, mounts=[*spec.model_dump()["mounts"], *mounts])
    return spec


DATA = [{"destination": "/data", "type": "bind", "source": "/srv/data"}]
HOSTPROC = [{"destination": "/hp", "type": "bind", "source": "/proc"}]
PROC2 = [{"destination": "/p2", "type": "proc", "source": "proc"}]


@pytest.mark.parametrize("cwd, mounts, needle", [
    *[(f"/proc/self/fd/{n}", None, "is under /proc") for n in (3, 7, 20)],
    ("/proc", None, "is under /proc"),
    ("//proc/self/fd/7", None, "is under /proc"),
    ("/proc/self/fd/7/../../../..", None, "is under /proc"),     # the walk goes through it
    ("/tmp/../proc/1/root", None, "is under /proc"),
    ("/dev/fd/7", None, "is under /dev/fd"),
    ("/dev/stdin", None, "is under /dev/stdin"),
    ("/escape", None,
     "leads (symlinks resolved in the rootfs) to /proc/self/fd/7, which is under /proc"),
    ("/escape-rel", None, "to /proc/self/fd/7, which is under /proc"),
    ("/etc/chain", None, "under /proc"),
    ("/devfd", None, "to /dev/fd/7, which is under /dev/fd"),
    ("/loop", None, "too many levels of symbolic links"),
    ("/data/link", DATA, "under /proc"),            # a link in a bind mount's source
    ("/hp/self/fd/7", HOSTPROC, "under /hp"),        # the host's /proc bound in
    ("/p2/self/cwd", PROC2, "under /p2"),            # another proc mount
])
def test_cwd_refused(cwd, mounts, needle):
    problem = cwd_problem(cwd_spec(cwd, mounts), image_readlink)
    assert problem is not None and problem.startswith(f"process.cwd={cwd}: ")
    assert needle in problem and "\n" not in problem


@pytest.mark.parametrize("cwd, mounts", [
    ("/", None), ("/etc", None), ("/abs", None), ("/rel", None), ("/up", None),
    ("/host", None),                  # resolved in the rootfs: a path there, not the host's
    ("/tmp/no/such/dir", None), ("/procfoo", None), ("/dev/shm", None), ("/sys/fs", None),
    ("/data/ok", DATA), ("/data/missing/x", DATA),
])
def test_cwd_allowed(cwd, mounts):
    assert cwd_problem(cwd_spec(cwd, mounts), image_readlink) is None


def test_cwd_through_the_hosts_root_bound_in():
    spec = cwd_spec("/host/proc/self/fd/7",
                    [{"destination": "/host", "type": "bind", "source": "/", "options": ["rbind"]}])
    host_links = {"/dev/fd": "/proc/self/fd"}
    problem = cwd_problem(spec, host_links.get)
    assert problem is not None and "under /host" in problem
    assert cwd_problem(spec, host_links.get, "/host/dev/fd/7") is not None     # -> /proc/self/fd/7
    assert cwd_problem(spec, host_links.get, "/host/etc") is None


def test_cwd_of_exec_is_checked_against_the_containers_spec():
    assert cwd_problem(make(), image_readlink, "/escape") is not None
    assert cwd_problem(make(), image_readlink, "/etc") is None


def test_cwd_check_hook_is_the_first_start_host_hook():
    spec = make(process={"cwd": "/tmp/a b"}, hooks={"prestart": [{"path": "/p"}]})
    hooks = values(config(spec), "lxc.hook.start-host")
    assert hooks[0] == cwd_check_hook("/tmp/a b", CDIR) and hooks[1:] == ["/p"]
    assert hooks[0].startswith("/bin/sh -c ") and hooks[0].endswith(f"{CDIR}/cwd-refused '/tmp/a b'")


def _check_hook(tmp_path, pid: str) -> tuple[int, str | None]:
    verdict = tmp_path / "cwd-refused"
    proc = subprocess.run(shlex.split(cwd_check_hook("/w", str(tmp_path))),
                          env={"LXC_PID": pid, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          check=False)
    return proc.returncode, verdict.read_text() if verdict.exists() else None


def test_cwd_check_hook_passes_a_cwd_inside_the_root(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        assert _check_hook(tmp_path, str(sleeper.pid)) == (0, None)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cwd_check_hook_fails_closed(tmp_path):
    code, verdict = _check_hook(tmp_path, "0")          # no such process
    assert code != 0
    assert verdict == "process.cwd=/w: cannot check where liblxc changed the working directory to"


# --- mount targets resolved in the rootfs (CVE-2021-30465 and kin) --------------------

HOST = "/work/somewhere/on/the/host"
LINKS = {"/mnt-abs": HOST, "/mnt-rel": "../" * 12 + HOST.lstrip("/"), "/up": "../../..",
         "/file-link": HOST + "/keep", "/p": "/proc", "/loop": "/loop", "/etc/abs": "/etc",
         "/devlink": "/real/dev"}
SOURCE_LINKS = {"/in-src": "/etc", "/out": "/mnt-abs/z"}


def links_readlink(host_path: str) -> str | None:
    """readlink in the fake rootfs /srv/rootfs (LINKS) and the bind source /srv/data."""
    for prefix, links in (("/srv/rootfs", LINKS), ("/srv/data", SOURCE_LINKS)):
        if host_path.startswith(prefix + "/"):
            return links.get(host_path[len(prefix):])
    raise AssertionError(f"read outside the rootfs and the bind sources: {host_path}")


def with_mounts(*mounts: dict[str, Any], **changes: Any) -> Spec:
    return make(mounts=[*make().model_dump()["mounts"], *mounts], **changes)


def target_of(mount: dict[str, Any]):
    spec = with_mounts(mount)
    targets, problems = mount_targets(spec, links_readlink)
    assert problems == []
    return targets[-1], spec


BIND = {"type": "bind", "source": "/srv/data"}


@pytest.mark.parametrize("dest, path", [
    ("/mnt-abs/x", HOST + "/x"),            # an absolute link to a host path: in the rootfs
    ("/mnt-rel/y", HOST + "/y"),            # .. stops at the rootfs's root
    ("/file-link", HOST + "/keep"),         # a (dangling) link to a host file
    ("/up/etc/abs/z", "/etc/z"),
    ("/plain/dir", "/plain/dir"),
])
def test_mount_target_resolved_in_the_rootfs_and_made_by_the_driver(dest, path):
    target, spec = target_of({"destination": dest, "type": "tmpfs"})
    assert (target.path, target.base, target.sub, target.liblxc_creates) == \
        (path, "/srv/rootfs", path.lstrip("/"), False)
    entry = entries(config(spec, targets=None, readlink=links_readlink))
    assert f"tmpfs {path.lstrip('/')} tmpfs defaults 0 0" in entry


def test_mount_target_in_a_bind_source_is_made_there_with_its_links_read_there():
    spec = with_mounts({"destination": "/data", **BIND},
                       {"destination": "/data/in-src/x", "type": "tmpfs"},
                       {"destination": "/data/out/y", "type": "tmpfs"},
                       {"destination": "/data/sub/z", "type": "tmpfs"})
    targets, problems = mount_targets(spec, links_readlink)
    assert problems == []
    got = [(t.path, t.base, t.sub) for t in targets[-4:]]
    assert got == [("/data", "/srv/rootfs", "data"),
                   ("/etc/x", "/srv/rootfs", "etc/x"),          # /data/in-src -> /etc
                   (HOST + "/z/y", "/srv/rootfs", HOST.lstrip("/") + "/z/y"),
                   ("/data/sub/z", "/srv/data", "sub/z")]


def test_mount_target_in_a_tmpfs_of_the_spec_is_made_by_liblxc():
    spec = with_mounts({"destination": "/run", "type": "tmpfs"},
                       {"destination": "/run/a", "type": "tmpfs"},
                       {"destination": "/run/f", "source": "/srv/app.conf", "options": ["bind"]},
                       {"destination": "/proc/cpuinfo", "source": "/srv/ci", "options": ["bind"]},
                       masked_paths=[], readonly_paths=[])
    targets, _ = mount_targets(spec, links_readlink)
    assert [(t.base, t.liblxc_creates) for t in targets[-4:]] == \
        [("/srv/rootfs", False), (None, True), (None, True), (None, False)]
    got = entries(config(spec, readlink=links_readlink))[-4:]
    assert got == ["tmpfs run tmpfs defaults 0 0", "tmpfs run/a tmpfs create=dir 0 0",
                   "/srv/app.conf run/f none bind,create=file 0 0",
                   "/srv/ci proc/cpuinfo none bind 0 0"]      # procfs: never create=


def test_dev_nodes_follow_the_resolved_dev():
    spec = make(mounts=[{"destination": "/devlink", "type": "tmpfs"}])
    targets, _ = mount_targets(spec, links_readlink)
    assert targets[0].path == "/real/dev"
    spec = make(mounts=[{"destination": "/dev", "type": "tmpfs"},
                        {"destination": "/dev/pts", "type": "devpts"}])
    readlink = {"/srv/rootfs/dev": "/real/dev"}.get
    got = entries(config(spec, readlink=readlink, source_is_dir=lambda _p: True))
    assert "/dev/null real/dev/null none bind,create=file 0 0" in got
    assert "devpts real/dev/pts devpts create=dir 0 0" in got
    assert "real/dev/pts/ptmx real/dev/ptmx none bind,relative,create=file 0 0" in got


@pytest.mark.parametrize("mount, needle", [
    ({"destination": "/proc", **BIND, "options": ["rbind"]},
     "mount /proc mounts[7].destination=/proc: only procfs may be mounted at /proc"),
    ({"destination": "/proc", "type": "tmpfs"}, "only procfs may be mounted at /proc"),
    ({"destination": "/p", **BIND},
     ("mount /p mounts[7].destination=/p: leads (symlinks resolved in the rootfs) to /proc, "
      "only procfs may be mounted at /proc")),
    ({"destination": "/loop/x", "type": "tmpfs"},
     "mount /loop/x mounts[7].destination=/loop/x: too many levels of symbolic links"),
    ({"destination": "/up", "type": "tmpfs"},
     "leads (symlinks resolved in the rootfs) to /, LXC cannot mount over the root"),
])
def test_mount_target_refused(mount, needle):
    spec = with_mounts(mount)
    assert len(spec.mounts) == 8
    _, problems = mount_targets(spec, links_readlink)
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith(f"mount {mount['destination']} mounts[7].destination=")
    assert needle in problems[0], problems[0]


def test_proc_mount_through_a_link_lands_where_it_resolves():
    spec = make(mounts=[{"destination": "/proc", "type": "proc", "source": "proc"}])
    targets, problems = mount_targets(spec, {"/srv/rootfs/proc": HOST}.get)
    assert problems == [] and targets[0].path == HOST


def test_cgroup_mount_must_resolve_to_sys_fs_cgroup():
    spec = make(mounts=[{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}])
    _, problems = mount_targets(spec, {"/srv/rootfs/sys": "/elsewhere"}.get)
    assert problems and "LXC mounts cgroups only at /sys/fs/cgroup" in problems[0]


def test_masked_and_readonly_paths_are_resolved_in_the_rootfs():
    spec = make(mounts=[], masked_paths=["/mnt-abs/kcore"], readonly_paths=["/mnt-rel"])
    assert entries(config(spec, readlink=links_readlink)) == [
        f"/dev/null {HOST.lstrip('/')}/kcore none bind,optional 0 0",
        f"tmpfs {HOST.lstrip('/')}/kcore tmpfs ro,nosuid,nodev,noexec,optional 0 0",
        f"{HOST.lstrip('/')} {HOST.lstrip('/')} none bind,relative,ro,optional 0 0"]


def test_make_targets_creates_inside_the_rootfs_only(tmp_path):
    """The targets are made in the rootfs even through links to host paths (no root
    needed: openat2 RESOLVE_IN_ROOT)."""
    from execdriver_lxc.paths import make_targets
    root, outside = tmp_path / "rootfs", tmp_path / "host-target"
    root.mkdir()
    outside.mkdir()
    (root / "mnt-abs").symlink_to(outside)
    (root / "mnt-rel").symlink_to("../" * 12 + str(outside).lstrip("/"))
    (root / "file-link").symlink_to(outside / "keep")
    (root / str(outside).lstrip("/")).mkdir(parents=True)
    src = tmp_path / "src-file"
    src.write_text("x")
    spec = make(root={"path": str(root)}, mounts=[
        {"destination": "/mnt-abs/x", "type": "tmpfs"},
        {"destination": "/mnt-rel/y/z", "type": "tmpfs"},
        {"destination": "/file-link", "source": str(src), "options": ["bind"]}])

    def readlink(p):
        try:
            return os.readlink(p)
        except OSError:
            return None
    targets, problems = mount_targets(spec, readlink)
    assert problems == []
    assert make_targets(spec, targets) is None
    inside = root / str(outside).lstrip("/")
    assert os.listdir(outside) == []
    assert (inside / "x").is_dir() and (inside / "y" / "z").is_dir()
    assert (inside / "keep").is_file()
    # a component that is a file: refused, naming the mount
    spec = make(root={"path": str(root)}, mounts=[{"destination": "/file-link/x", "type": "tmpfs"}])
    targets, _ = mount_targets(spec, readlink)
    i, cause = make_targets(spec, targets)
    assert i == 0 and cause.startswith(f"cannot make the target {outside}/keep/x in the rootfs: ")


def test_liblxc_failure_names_the_mount():
    """liblxc names the target under its rootfs mount: the error names the spec mount."""
    from execdriver_lxc.paths import mount_in_reason
    spec = with_mounts({"destination": "/file-link", "source": "/srv/f", "options": ["bind"]},
                       {"destination": "/proc/self/environ", "source": "/srv/f",
                        "options": ["bind"]})
    targets, _ = mount_targets(spec, links_readlink)
    rootfs = "/usr/lib/x86_64-linux-gnu/lxc/rootfs"
    reason = (f"Too many levels of symbolic links - self in {rootfs}/proc/self/environ was a "
              f'symbolic link!; Failed to mount "/srv/f" on "{rootfs}/proc/self/environ"')
    assert mount_in_reason(reason, spec, targets) == 8
    keep = HOST.lstrip("/") + "/keep"           # /file-link resolved in the rootfs
    assert mount_in_reason(f"x in {rootfs}/{keep} was a symbolic link!", spec, targets) == 7
    assert mount_in_reason(f"x in {rootfs}/file-link was a symbolic link!", spec, targets) == 7
    assert mount_in_reason(f'Failed to mount "/dev/null" on "{rootfs}/dev/null"', spec,
                           targets) is None     # under /dev, not /dev itself
    assert mount_in_reason('Failed to exec "/no/such/binary"', spec, targets) is None
