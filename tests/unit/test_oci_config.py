"""config.json -> Spec: what podman, containerd and runc send, and every refusal."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from execdriver.errors import SpecError
from execdriver.oci.config import (
    _Problems,
    convert,
    convert_device_nodes,
    convert_devices,
    convert_process,
    load_bundle,
)
from execdriver.oci.queries import default_config

CAPS = ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
        "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"]

# What podman 4.3 (cgroupfs, --network none) writes, seccomp profile trimmed.
PODMAN = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "user": {"uid": 0, "gid": 0, "umask": 18},
        "args": ["echo", "hi"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm", "container=podman", "HOME=/root", "HOSTNAME=e5eea75f2ef1"],
        "cwd": "/",
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
    },
    "root": {"path": "/var/lib/containers/storage/vfs/dir/8cdb"},
    "hostname": "e5eea75f2ef1",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/run/userdata/hosts",
         "options": ["bind", "rprivate"]},
        {"destination": "/dev/shm", "type": "bind", "source": "/var/userdata/shm",
         "options": ["bind", "rprivate", "nosuid", "noexec", "nodev"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "annotations": {"io.container.manager": "libpod", "io.podman.annotations.autoremove": "TRUE"},
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 2048}},
        "cgroupsPath": "/libpod_parent/libpod-e5eea75f2ef1",
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                       {"type": "mount"}],
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["bdflush", "kexec_load", "pciconfig_iobase"], "action": "SCMP_ACT_ERRNO",
                 "errnoRet": 1},
                {"names": ["read", "write", "_llseek", "chown32"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            ],
        },
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware", "/sys/fs/selinux"],
        "readonlyPaths": ["/proc/bus", "/proc/sys"],
    },
}


def conv(config: dict[str, Any], bundle: str = "/bundle") -> Any:
    return convert(copy.deepcopy(config), bundle)


def problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        conv(config)
    return info.value.problems


def with_(path: str, value: Any, base: dict[str, Any] = PODMAN) -> dict[str, Any]:
    """A copy of ``base`` with ``a.b.c`` set (None deletes it)."""
    out = copy.deepcopy(base)
    parts = path.split(".")
    target = out
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    if value is None:
        target.pop(parts[-1], None)
    else:
        target[parts[-1]] = value
    return out


def test_podman_config_translates() -> None:
    c = conv(PODMAN)
    s = c.spec
    assert s.process.args == ["echo", "hi"]
    assert s.process.env["container"] == "podman"
    assert s.process.umask == 18
    assert s.process.capabilities.bounding == CAPS
    assert s.process.capabilities.inheritable == [] and s.process.capabilities.ambient == []
    assert s.process.no_new_privileges is False          # OCI default, not ours
    assert s.hostname == "e5eea75f2ef1"
    assert s.network.mode == "none"
    assert sorted(s.namespace_types()) == ["ipc", "mount", "network", "pid", "uts"]
    assert c.cgroup_name == "libpod_parent/libpod-e5eea75f2ef1"
    assert s.resources.pids.limit == 2048
    assert s.resources.devices == []                      # deny-all is implied
    assert [m.destination for m in s.mounts][:2] == ["/proc", "/dev"]
    shm = next(m for m in s.mounts if m.destination == "/dev/shm")
    assert shm.type == "bind" and shm.source == "/var/userdata/shm"
    assert s.masked_paths == ["/proc/acpi", "/proc/kcore", "/sys/firmware", "/sys/fs/selinux"]
    assert s.readonly_paths == ["/proc/bus", "/proc/sys"]
    assert s.annotations["io.container.manager"] == "libpod"
    assert s.seccomp.mode == "profile"
    prof = s.seccomp.profile
    assert prof.default_action == "errno" and prof.default_errno == 38
    assert prof.syscalls[0].names == ["bdflush", "kexec_load"] and prof.syscalls[0].errno == 1
    assert prof.syscalls[2].args[0].op == "eq" and prof.syscalls[2].args[0].value == 8
    assert any("pciconfig_iobase" in i for i in c.ignored)


def test_podman_profile_compiles() -> None:
    from execdriver.kernel.seccomp import compile_filter
    prog = compile_filter(conv(PODMAN).spec.seccomp)
    assert prog and len(prog) % 8 == 0


def test_runc_spec_default_translates() -> None:
    c = conv(default_config())
    s = c.spec
    assert s.root.path == "/bundle/rootfs" and s.root.readonly
    assert s.process.no_new_privileges and s.process.rlimits[0].type == "nofile"
    assert s.seccomp.mode == "unconfined"                 # no seccomp section
    assert "cgroup" in s.namespace_types()


def test_runc_ambient_without_inheritable_is_dropped_not_refused() -> None:
    # runc 1.1's own `runc spec` output lists ambient capabilities that are not
    # inheritable; the kernel cannot raise those, runc drops them: so do we.
    cfg = with_("process.capabilities", {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                         "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]})
    c = conv(cfg)
    assert c.spec.process.capabilities.ambient == []
    assert any("ambient" in i for i in c.ignored)


def test_as_runc_kernel_memory_and_unknown_capabilities_are_warned_about_not_refused() -> None:
    cfg = with_("process.capabilities", {"bounding": ["CAP_KILL", "CAP_FROM_THE_FUTURE"],
                                         "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]})
    cfg["linux"]["resources"] = {"memory": {"limit": 1 << 26, "kernel": 1 << 25,
                                            "kernelTCP": 1 << 24}}
    c = conv(cfg)
    assert c.spec.process.capabilities.bounding == ["CAP_KILL"]
    assert c.spec.resources.memory.limit == 1 << 26
    assert c.warnings == [
        "process.capabilities.bounding: unknown capability 'CAP_FROM_THE_FUTURE' ignored",
        "linux.resources.memory.kernel: kernel memory limits are deprecated; ignored",
        "linux.resources.memory.kernelTCP: kernel memory limits are deprecated; ignored"]


@pytest.mark.parametrize("path,value,expected", [
    ("linux.intelRdt", {"closID": "x"}, "linux.intelRdt: not supported"),
    ("linux.personality", {"domain": "LINUX32"}, "linux.personality: not supported"),
    ("linux.timeOffsets", {"monotonic": {"secs": 1}}, "linux.timeOffsets: not supported"),
    ("linux.devices", [{"path": "/dev/fuse", "type": "x", "major": 10, "minor": 229}],
     "linux.devices[0].type: required: c, b, u or p"),
    ("linux.devices", [{"type": "c", "major": 10, "minor": 229}],
     "linux.devices[0].path: required, an absolute path"),
    ("linux.devices", [{"path": "/dev/fuse", "type": "c", "major": "10", "minor": 229}],
     "linux.devices[0].major: must be an integer"),
    ("linux.devices", {"path": "/dev/fuse"}, "linux.devices: must be an array"),
    ("linux.mountLabel", "system_u:object_r:x", "linux.mountLabel: SELinux"),
    ("linux.rootfsPropagation", "rbogus", "linux.rootfsPropagation: 'rbogus' is not a propagation"),
    ("linux.cgroupsPath", "machine.slice:abc", "linux.cgroupsPath: 'machine.slice:abc' is neither"),
    ("linux.cgroupsPath", "/a/../b", "linux.cgroupsPath: '/a/../b' is not a cgroup path"),
    ("linux.resources.hugepageLimits", [{"pageSize": "2MB", "limit": 1}],
     "linux.resources.hugepageLimits: hugetlb"),
    ("linux.resources.memory", {"checkBeforeUpdate": True},
     "linux.resources.memory.checkBeforeUpdate: not supported"),
    ("linux.resources.cpu", {"realtimeRuntime": 5}, "linux.resources.cpu.realtimeRuntime"),
    ("linux.resources.blockIO", {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}]},
     "linux.resources.blockIO.throttleReadBpsDevice: not supported"),
    ("linux.resources.unified", {"memory.high": "1"}, "linux.resources.unified: cgroup v2"),
    ("linux.seccomp.flags", ["SECCOMP_FILTER_FLAG_LOG"], "linux.seccomp.flags: seccomp filter flags"),
    ("linux.seccomp.listenerPath", "/run/x.sock", "linux.seccomp.listenerPath: seccomp notify"),
    ("linux.seccomp.defaultAction", "SCMP_ACT_NOTIFY", "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY"),
    ("linux.seccomp.architectures", ["SCMP_ARCH_PPC64LE"], "linux.seccomp.architectures: must include"),
    ("process.scheduler", {"policy": "SCHED_FIFO"}, "process.scheduler: not supported"),
    ("process.ioPriority", {"class": "IOPRIO_CLASS_IDLE"}, "process.ioPriority: not supported"),
    ("process.commandLine", "cmd.exe", "process.commandLine: Windows only"),
    ("process.selinuxLabel", "system_u:system_r:x", "process.selinuxLabel: SELinux"),
    ("process.user.username", "root", "process.user.username: Windows only"),
    ("process.args", None, "process.args: required"),
    ("process", None, "process: required"),
    ("root", None, "root.path: required"),
    ("windows", {"layerFolders": []}, "windows: Windows containers are not supported"),
    ("vm", {"kernel": {"path": "/k"}}, "vm: virtual-machine containers are not supported"),
    ("ociVersion", "2.0.0", "ociVersion: '2.0.0' is not supported"),
    ("hooks.prestart", [{"path": "relative/hook"}], "hooks.prestart[0].path: required, an absolute path"),
    ("hooks.poststop", [{"path": "/bin/true", "timeout": 0}], "hooks.poststop[0].timeout: must be"),
    ("mounts", [{"destination": "/x", "source": "/tmp", "options": ["rbind", "tmpcopyup"]}],
     "mounts[0].options: 'tmpcopyup' is a tmpfs option"),
    ("mounts", [{"destination": "/x", "source": "/tmp", "options": ["rbind", "size=1k"]}],
     "mounts[0].options: 'size=1k' is not a bind mount option"),
    ("mounts", [{"destination": "/x", "source": "/tmp"}], "mounts[0].type: required"),
    ("mounts", [{"destination": "/x", "type": "bind", "source": "/tmp",
                 "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}],
     "mounts[0].uidMappings: id-mapped mounts are not supported"),
    # wrong types and values the kernel cannot take: named, not a traceback
    ("linux.seccomp", {}, "linux.seccomp.defaultAction: required"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": [1], "action": "SCMP_ACT_ALLOW"}]}, "linux.seccomp.syscalls[0].names: must be an"),
    ("process.capabilities.ambient", ["CAP_KILL", None], "process.capabilities.ambient: must be an"),
    ("hooks.prestart", [{"path": "/bin/true", "timeout": True}], "hooks.prestart[0].timeout: must be"),
    ("process.consoleSize", {"height": 70000, "width": 80}, "process.consoleSize.height: must be"),
    ("linux.resources.memory", {"limit": 2**64}, "resources.memory.limit: too large"),
    ("linux.resources.cpu", {"quota": 2**44}, "resources.cpu.quota: "),
    ("process.cwd", "/a\0b", "process.cwd: must not contain a NUL byte"),
    ("linux.maskedPaths", ["/proc/k\0"], "masked_paths[0]: must not contain a NUL byte"),
    ("mounts", [{"destination": "/x", "type": "tmpfs", "source": "t", "options": ["size=1k\0"]}],
     "mounts[0].options[0]: must not contain a NUL byte"),
])
def test_unsupported_field_is_named(path: str, value: Any, expected: str) -> None:
    found = problems(with_(path, value))
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_reported_together() -> None:
    cfg = with_("linux.intelRdt", {"closID": "x"}, with_("process.scheduler", {"policy": "x"}))
    found = problems(cfg)
    assert len(found) == 2


def test_unknown_properties_are_ignored_and_listed() -> None:
    c = conv(with_("linux.somethingNew", {"a": 1}, with_("vendorExtension", 1)))
    assert "linux.somethingNew: unknown property" in c.ignored
    assert "vendorExtension: unknown property" in c.ignored


def test_spec_validation_errors_come_back_as_spec_error() -> None:
    found = problems(with_("process.cwd", "relative"))
    assert any(p.startswith("process.cwd") for p in found)
    found = problems(with_("linux.namespaces", [{"type": "pid"}, {"type": "mount"}]))
    assert any("hostname needs a uts namespace" in p for p in found)


def test_namespaces_and_network_modes() -> None:
    s = conv(with_("linux.namespaces", [{"type": "network", "path": "/run/netns/x"},
                                         {"type": "mount"}, {"type": "uts"}])).spec
    assert s.network.mode == "netns" and s.network.netns_path == "/run/netns/x"
    assert s.namespace_path("network") == "/run/netns/x"
    s = conv(with_("linux.namespaces", [{"type": "mount"}, {"type": "uts"}])).spec
    assert s.network.mode == "host"
    found = problems(with_("linux.namespaces", [{"type": "bogus"}]))
    assert found == ["linux.namespaces[0].type: unknown namespace type 'bogus'"]


@pytest.mark.parametrize("propagation", ["private", "rprivate", "slave", "rslave", "shared",
                                         "rshared", "unbindable", "runbindable"])
def test_rootfs_propagation_reaches_the_spec(propagation: str) -> None:
    assert conv(with_("linux.rootfsPropagation", propagation)).spec.root.propagation == propagation


def test_without_rootfs_propagation_the_runtime_default_applies() -> None:
    assert conv(with_("linux.maskedPaths", [])).spec.root.propagation is None


def test_user_namespace_mappings() -> None:
    cfg = with_("linux.uidMappings", [{"containerID": 0, "hostID": 100000, "size": 65536}])
    cfg = with_("linux.gidMappings", [{"containerID": 0, "hostID": 100000, "size": 65536}], cfg)
    cfg["linux"]["namespaces"].append({"type": "user"})
    s = conv(cfg).spec
    assert s.uid_mappings[0].host_id == 100000 and s.gid_mappings[0].size == 65536


def test_resources_translation() -> None:
    res = {"memory": {"limit": 64 << 20, "reservation": 0, "swap": -1},
           "cpu": {"shares": 512, "quota": -1, "period": 100000, "cpus": "0", "mems": ""},
           "pids": {"limit": 0}, "blockIO": {"weight": 500}}
    s = conv(with_("linux.resources", res)).spec
    r = s.resources
    assert r.memory.limit == 64 << 20 and r.memory.reservation is None and r.memory.swap == -1
    assert r.cpu.shares == 512 and r.cpu.quota is None and r.cpu.period == 100000
    assert r.cpu.cpus == "0" and r.cpu.mems is None
    assert r.pids.limit is None and r.block_io.weight == 500


@pytest.mark.parametrize("rules,expected", [
    ([{"allow": False, "access": "rwm"}], []),
    ([{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 10, "minor": 229,
                                          "access": "rw"}],
     [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}]),
    # everything before the last deny-all is overridden by it
    ([{"allow": True, "type": "b", "major": 8, "access": "r"}, {"allow": False, "type": "a"}],
     []),
    ([{"allow": True, "type": "c", "major": -1, "minor": -1}],
     [{"allow": True, "type": "c", "major": None, "minor": None, "access": "rwm"}]),
    ([{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}],
     [{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]),
])
def test_device_rules(rules: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert convert_devices(rules, "linux.resources.devices", _Problems()) == expected


@pytest.mark.parametrize("devices,expected", [
    ([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666,
       "uid": 0, "gid": 0}],
     [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "file_mode": 0o666,
       "uid": 0, "gid": 0}]),
    # fileMode with the type bits (as stat gives it): only the permission bits are kept
    ([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 0o060640,
       "uid": 5, "gid": 6}],
     [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "file_mode": 0o640,
       "uid": 5, "gid": 6}]),
    # what is not given keeps the spec's default
    ([{"path": "/dev/fifo", "type": "p"}], [{"path": "/dev/fifo", "type": "p"}]),
])
def test_device_nodes(devices: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert convert_device_nodes(devices, "linux.devices", _Problems()) == expected


def test_linux_devices_reach_the_spec_with_their_mode_and_owner() -> None:
    spec = conv(with_("linux.devices", [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600,
         "uid": 1000, "gid": 1001},
        {"path": "/dev/ttyS9", "type": "u", "major": 4, "minor": 73}])).spec
    fuse, tty = spec.devices
    assert (fuse.path, fuse.type, fuse.major, fuse.minor) == ("/dev/fuse", "c", 10, 229)
    assert (fuse.file_mode, fuse.uid, fuse.gid) == (0o600, 1000, 1001)
    assert (tty.type, tty.file_mode, tty.uid, tty.gid) == ("u", 0o666, 0, 0)


@pytest.mark.parametrize("device,expected", [
    ({"path": "dev/fuse", "type": "c", "major": 10, "minor": 229},
     "devices[0].path: must be an absolute path inside the container"),
    ({"path": "/dev/../etc/x", "type": "c", "major": 10, "minor": 229},
     "devices[0].path: must not contain '..'"),
    ({"path": "/dev/fuse", "type": "c", "minor": 229}, "devices[0]: a character device needs major"),
    ({"path": "/dev/fuse", "type": "c", "major": 5000, "minor": 1}, "devices[0].major"),
])
def test_bad_linux_devices_are_refused(device: dict[str, Any], expected: str) -> None:
    lines = problems(with_("linux.devices", [device]))
    assert any(line.startswith(expected) for line in lines), lines


def test_seccomp_actions_and_ops() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
        {"names": ["mount"], "action": "SCMP_ACT_LOG"},
        {"names": ["umount2"], "action": "SCMP_ACT_KILL_THREAD"},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
    ]}
    c = conv(with_("linux.seccomp", sec))
    p = c.spec.seccomp.profile
    assert p.default_action == "allow"
    assert [r.action for r in p.syscalls] == ["kill_process", "trace", "log", "kill", "errno"]
    assert p.syscalls[1].errno == 7
    assert p.syscalls[4].args[0].op == "masked_eq" and p.syscalls[4].args[0].value_two == 0x10000000
    assert any("no_such_syscall_anywhere" in i for i in c.ignored)


def test_console_size() -> None:
    assert conv(with_("process.consoleSize", {"height": 30, "width": 100})).console_size == (30, 100)
    assert conv(with_("process.consoleSize", {"width": 80})).console_size == (0, 80)
    assert conv(with_("process.consoleSize", {})).console_size is None


def test_seccomp_names_of_other_abis_are_kept_for_the_compiler() -> None:
    sec = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["chown32", "keyctl"], "action": "SCMP_ACT_ERRNO"}]}
    c = conv(with_("linux.seccomp", sec))
    assert c.spec.seccomp.profile.syscalls[0].names == ["chown32", "keyctl"]


def test_relative_paths_are_taken_from_the_bundle() -> None:
    cfg = with_("root", {"path": "rootfs"})
    cfg["mounts"] = [{"destination": "data", "type": "bind", "source": "vol", "options": ["rbind"]}]
    s = conv(cfg, "/srv/b").spec
    assert s.root.path == "/srv/b/rootfs"
    assert s.mounts[0].source == "/srv/b/vol" and s.mounts[0].destination == "/data"


def test_defaults_are_ocis_not_ours() -> None:
    cfg = {"ociVersion": "1.0.0", "root": {"path": "/r"}, "process": {"args": ["/bin/true"]}}
    s = conv(cfg).spec
    assert s.mounts == [] and s.masked_paths == [] and s.readonly_paths == []
    assert s.namespaces == [] and s.network.mode == "host"
    assert s.process.capabilities.bounding == [] and s.process.env == {}
    assert s.seccomp.mode == "unconfined" and not s.process.no_new_privileges


def test_hooks_translation() -> None:
    hooks = {"prestart": [{"path": "/bin/a", "args": ["a", "x"], "env": ["K=V"], "timeout": 3}],
             "createRuntime": [{"path": "/bin/b"}], "poststop": [{"path": "/bin/c"}]}
    c = conv(with_("hooks", hooks))
    assert c.hooks["prestart"][0] == {"path": "/bin/a", "args": ["a", "x"], "env": ["K=V"],
                                      "timeout": 3}
    assert [h.path for h in c.spec.hooks.create_runtime] == ["/bin/b"]
    assert "startContainer" not in c.hooks


def test_process_for_exec() -> None:
    proc = convert_process({"args": ["sh"], "env": ["A=1"], "cwd": "/tmp", "terminal": False,
                            "user": {"uid": 5, "gid": 6, "additionalGids": [7]},
                            "capabilities": {"bounding": ["CAP_KILL"]}, "noNewPrivileges": True,
                            "oomScoreAdj": 100, "rlimits": [{"type": "RLIMIT_NOFILE",
                                                             "soft": 10, "hard": 20}]})
    assert proc["user"] == {"uid": 5, "gid": 6, "additional_gids": [7]}
    assert proc["capabilities"]["bounding"] == ["CAP_KILL"]
    assert proc["oom_score_adj"] == 100 and proc["no_new_privileges"]
    with pytest.raises(SpecError, match=r"process\.env\[0\]"):
        convert_process({"args": ["sh"], "env": ["NOEQUALS"]})


def test_load_bundle_errors(tmp_path: Any) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_bundle(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="not JSON"):
        load_bundle(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(PODMAN))
    assert load_bundle(str(tmp_path)).spec.hostname == "e5eea75f2ef1"


@pytest.mark.parametrize("memory,want", [
    ({"swappiness": 60, "disableOOMKiller": True, "reservation": 1 << 20},
     {"swappiness": 60, "disable_oom_killer": True, "reservation": 1 << 20}),
    ({"swappiness": 0, "disableOOMKiller": False}, {"swappiness": 0, "disable_oom_killer": False}),
    ({"swappiness": -1}, {"swappiness": None}),          # docker's "not set"
])
def test_memory_swappiness_oom_killer_and_reservation_are_converted(
        memory: dict[str, Any], want: dict[str, Any]) -> None:
    cfg = with_("linux.resources", {"memory": memory})
    got = conv(cfg).spec.resources.memory.model_dump()
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("memory,problem", [
    ({"swappiness": 101}, "resources.memory.swappiness: Input should be less than or equal to 100"),
    ({"disableOOMKiller": "yes"}, "linux.resources.memory.disableOOMKiller: must be a boolean"),
    ({"swappiness": "60"}, "linux.resources.memory.swappiness: must be an integer"),
])
def test_bad_memory_knobs_are_named(memory: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError) as info:
        conv(with_("linux.resources", {"memory": memory}))
    assert problem in info.value.problems


@pytest.mark.parametrize("mount", [
    {"destination": "/t", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "nodev", "mode=755", "size=65536k", "uid=1", "gid=2"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nodev"]},
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["hidepid=2"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "rslave"]},
    {"destination": "/o", "type": "overlay", "source": "overlay",
     "options": ["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]},
    {"destination": "/b", "type": "bind", "source": "/tmp",
     "options": ["rbind", "rro", "rnosuid", "rshared", "runbindable"]},
])
def test_every_filesystem_type_keeps_its_data_options(mount: dict[str, Any]) -> None:
    got = conv(with_("mounts", [mount])).spec.mounts[0]
    assert (got.type, got.options) == (mount["type"], mount["options"])
