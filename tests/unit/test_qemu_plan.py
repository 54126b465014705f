"""The qemu driver's planning, pure (no root, no qemu): the qemu command line, the VM's
size, the guest's process config and mounts, the initramfs layout and module order."""

from __future__ import annotations

import struct

import pytest

from execdriver.errors import UnsupportedFeature
from execdriver.spec import Spec
from execdriver_qemu.channels import FrameReader, frame
from execdriver_qemu.initramfs import BuildError, Entry, base_entries, cpio, module_order
from execdriver_qemu.translate import (
    CAPABILITIES,
    cap_mask,
    guest_mounts,
    init_conf,
    process_config,
    refusals,
)
from execdriver_qemu.vm import PORTS, VmPlan, cpus, memory_mib, qemu_argv


def _spec(**changes: object) -> Spec:
    from execdriver_qemu.driver import QemuDriver
    spec = QemuDriver.__new__(QemuDriver).default_spec("/r", ["/bin/true"])
    data = spec.model_dump()
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return Spec.model_validate(data)


def _plan(**changes: object) -> VmPlan:
    base: dict[str, object] = {
        "qemu": "Q", "kernel": "/boot/vmlinuz-x", "initrd": "/s/initrd", "accel": "tcg",
        "memory_mib": 256, "cpus": 1, "rootfs": "/r", "readonly": False,
        "console_log": "/s/console.log",
        "files": {"control": "/proc/self/fd/5", "stdout": "/proc/self/fd/6",
                  "stderr": "/proc/self/fd/7"},
        "sockets": {"stdin": "/run/x/stdin.sock", "signal": "/run/x/signal.sock",
                    "agent": "/run/x/agent.sock"},
        "qmp": "/run/x/qmp.sock"}
    return VmPlan(**{**base, **changes})  # type: ignore[arg-type]


def _value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_command_line_tcg() -> None:
    argv = qemu_argv(_plan())
    assert argv[0] == "Q"
    assert _value(argv, "-accel") == ["tcg,thread=multi"]
    assert _value(argv, "-m") == ["256"] and _value(argv, "-smp") == ["1"]
    assert _value(argv, "-virtfs") == [
        "local,path=/r,mount_tag=rootfs,security_model=none,multidevs=remap"]
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert _value(argv, "-qmp") == ["unix:/run/x/qmp.sock,server=on,wait=off"]
    chardevs = _value(argv, "-chardev")
    assert chardevs == [
        "file,id=control,path=/proc/self/fd/5",
        "socket,id=stdin,path=/run/x/stdin.sock,server=on,wait=off",
        "file,id=stdout,path=/proc/self/fd/6", "file,id=stderr,path=/proc/self/fd/7",
        "socket,id=signal,path=/run/x/signal.sock,server=on,wait=off",
        "socket,id=agent,path=/run/x/agent.sock,server=on,wait=off"]
    ports = [d for d in _value(argv, "-device") if d.startswith("virtserialport")]
    assert [p.rsplit("name=", 1)[1] for p in ports] == list(PORTS)
    assert all(f"nr={i}," in p for i, p in enumerate(ports, start=1))   # nr 0: a console's


def test_command_line_kvm_readonly_and_commas() -> None:
    argv = qemu_argv(_plan(accel="kvm", readonly=True, rootfs="/a,b", memory_mib=512, cpus=2))
    assert _value(argv, "-accel") == ["kvm"] and _value(argv, "-cpu") == ["host"]
    assert _value(argv, "-virtfs") == [
        "local,path=/a,,b,mount_tag=rootfs,security_model=none,multidevs=remap,readonly=on"]
    assert (_value(argv, "-m"), _value(argv, "-smp")) == (["512"], ["2"])


def test_vm_size() -> None:
    assert memory_mib(None) == 256
    assert memory_mib(200 << 20) == 200
    assert memory_mib((200 << 20) + 1) == 201
    assert cpus(None, None, 8) == 1
    assert cpus(150_000, 100_000, 8) == 2
    assert cpus(50_000, 100_000, 8) == 1
    assert cpus(1_000_000, 100_000, 4) == 4       # at most the host's


def _fields(blob: bytes) -> list[str]:
    assert blob.endswith(b"\0")
    return blob[:-1].decode().split("\0")


def test_process_config() -> None:
    spec = _spec(process__cwd="/tmp", process__env={"A": "a b", "E": ""},
                 process__args=["/bin/sh", "-c", "echo 'x y'"],
                 process__user={"uid": 1, "gid": 2, "additional_gids": [5, 7]},
                 process__rlimits=[{"type": "nofile", "soft": 512, "hard": 1024}],
                 process__oom_score_adj=100,
                 process__capabilities={"bounding": ["CAP_KILL", "CAP_CHOWN"],
                                        "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
                                        "inheritable": [], "ambient": []})
    f = _fields(process_config(spec.process))
    assert f[:6] == ["/tmp", "1", "2", "2", "5", "7"]
    assert f[6:9] == ["2", "A=a b", "E="]
    assert f[9:13] == ["3", "/bin/sh", "-c", "echo 'x y'"]
    assert f[13:16] == ["22", "1", "100"]         # umask (octal), no_new_privs, oom_score_adj
    assert f[16:21] == [str(1 << 5 | 1), str(1 << 5), str(1 << 5), "0", "0"]
    assert f[21:] == ["1", "7", "512", "1024"]    # RLIMIT_NOFILE is 7


def test_capability_numbers() -> None:
    assert CAPABILITIES.index("CAP_SYS_ADMIN") == 21
    assert CAPABILITIES.index("CAP_CHECKPOINT_RESTORE") == 40
    assert cap_mask(["CAP_CHOWN", "cap_net_raw"]) == 1 | 1 << 13


def test_guest_mounts_and_init_conf() -> None:
    spec = _spec(hostname="box")
    mounts = guest_mounts(spec)
    assert mounts[0] == ("proc", "proc", "nosuid,noexec,nodev", "/proc")
    assert ("cgroup2", "cgroup", "nosuid,noexec,nodev,relatime,ro", "/sys/fs/cgroup") in mounts
    assert [m[3] for m in mounts].count("/dev") == 1
    conf = init_conf(spec, "box")
    assert "READONLY=0\nHOSTNAME=box\n" in conf
    assert "    mnt tmpfs tmpfs nosuid,strictatime,mode=755,size=65536k /dev\n" in conf
    # no /dev in the spec: the guest still gets one (a tmpfs with the usual nodes)
    bare = _spec(mounts=[], root__readonly=True)
    assert guest_mounts(bare)[0][3] == "/dev"
    assert "READONLY=1\nHOSTNAME='it'\"'\"'s'\n" in init_conf(bare, "it's")


def test_refusals_name_the_field() -> None:
    assert refusals(_spec()) == []
    spec = _spec(resources__memory={"limit": 1 << 20, "swap": 2 << 20},
                 resources__cpu={"shares": 512})
    spec = Spec.model_validate(spec.model_dump() | {"mounts": [
        {"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["ro"]}]})
    problems = refusals(spec)
    assert [p.split()[0] for p in problems] == [
        "mounts[0]", "resources.memory.swap", "resources.memory.limit", "resources.cpu.shares"]


def test_driver_refuses_before_anything(tmp_path: object) -> None:
    from execdriver_qemu.driver import QemuDriver
    driver = QemuDriver(str(tmp_path))
    spec = _spec(resources__cpu={"shares": 512})
    with pytest.raises(UnsupportedFeature) as err:
        driver.check_spec(spec)
    assert "resources.cpu.shares" in str(err.value) and "\n" not in str(err.value)
    spec = _spec(seccomp__mode="default")
    with pytest.raises(UnsupportedFeature, match=r"seccomp\.default"):
        driver.check_spec(spec)


def test_module_order() -> None:
    deps = {"9p": ["9pnet", "netfs", "fscache"], "fscache": ["netfs"],
            "9pnet_virtio": ["virtio", "9pnet", "virtio_ring"], "virtio": [],
            "virtio_pci": ["virtio_ring", "virtio"]}
    order = module_order(["virtio_pci", "9pnet_virtio", "9p"], deps)
    assert sorted(order) == sorted({"virtio_pci", "9pnet_virtio", "9p", "9pnet", "netfs",
                                    "fscache", "virtio", "virtio_ring"})
    for mod, needs in deps.items():
        for dep in needs:
            assert order.index(dep) < order.index(mod), (dep, mod)
    with pytest.raises(BuildError, match="cycle a -> b -> a"):
        module_order(["a"], {"a": ["b"], "b": ["a"]})


def _unpack(archive: bytes) -> dict[str, tuple[int, bytes]]:
    out, off = {}, 0
    while True:
        assert archive[off:off + 6] == b"070701"
        head = [int(archive[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = head[1], head[6], head[11]
        name = archive[off + 110:off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        data = archive[off:off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data)


def test_initramfs_layout() -> None:
    archive = cpio(base_entries(b"BB", b"GUEST", b"#!init", [("virtio", b"V"), ("9p", b"P")]))
    files = _unpack(archive)
    assert files["init"] == (0o100755, b"#!init")
    assert files["bin/execdriver-guest"] == (0o100755, b"GUEST")
    assert files["bin/sh"] == (0o120777, b"busybox")
    assert files["modules/order"][1] == b"virtio\n9p\n"
    assert files["modules/9p.ko"] == (0o100644, b"P")
    assert files["newroot"][0] == 0o040755
    assert len(archive) % 4 == 0
    assert _unpack(cpio([Entry("execdriver/config", 0o644, b"a\0b\0")])) == {
        "execdriver/config": (0o100644, b"a\0b\0")}


def test_agent_frames() -> None:
    data = frame(b"o", b"hello") + frame(b"x", b"3 -")
    assert data[:5] == b"o" + struct.pack(">I", 5)
    reader = FrameReader()
    assert reader.feed(data[:7]) == []
    assert reader.feed(data[7:]) == [(b"o", b"hello"), (b"x", b"3 -")]


def test_acceleration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from execdriver_qemu.vm import ACCEL_ENV, Kernel, choose_accel
    kernel = Kernel("v", "/boot/vmlinuz-v", "/lib/modules/v")
    for name in ("kvm", "tcg"):
        monkeypatch.setenv(ACCEL_ENV, name)
        accel = choose_accel("Q", kernel, None)     # decided without probing
        assert (accel.name, accel.why) == (name, f"{ACCEL_ENV}={name}")


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from execdriver_qemu import driver
    monkeypatch.setattr(driver, "qemu_path", lambda: "/usr/bin/qemu-system-x86_64")
    monkeypatch.setattr(driver, "find_kernel", lambda: None)
    why = driver.QemuDriver.availability()
    assert not why.available and why.reason.startswith("no guest kernel")
    monkeypatch.setattr(driver, "qemu_path", lambda: None)
    assert "qemu-system-x86_64 not found" in driver.QemuDriver.availability().reason
