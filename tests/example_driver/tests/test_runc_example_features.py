"""Every feature the example driver declares, checked for real (root, runc).

The conformance suite covers the behaviour every driver shares; this covers
the rest of ``RuncExampleDriver.features``, one row per feature, so that a
declared feature is one that works. ``test_every_declared_feature_is_checked``
keeps the declaration and the checks in step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from execdriver.driver import ExecDriver, Stdio
from execdriver.spec import validate_spec
from execdriver.testing.helpers import Output, new_id
from execdriver_runc_example.driver import RuncExampleDriver

pytestmark = pytest.mark.root

# Checked by the conformance suite (tests/conformance/test_example_driver.py).
COVERED_BY_CONFORMANCE = {"process.user", "hostname", "pause", "exec", "stats"}
HOST_NS = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
           "cgroup": "cgroup"}
MAPPING = [{"container_id": 0, "host_id": 100000, "size": 65536}]


@pytest.fixture
def conformance_driver_name() -> str:
    return "runc-example"


@pytest.fixture(scope="module")
def open_rootfs() -> Iterator[Path]:
    """A rootfs whose every parent is searchable: a user namespace's root (an
    unprivileged host uid) must reach it, and pytest's tmp dirs are 0700."""
    from execdriver.rootfs import build_busybox
    top = Path(tempfile.mkdtemp(prefix="execdriver-userns-"))
    top.chmod(0o755)
    yield build_busybox(top / "rootfs")
    shutil.rmtree(top)


def _set(**fields: Any) -> Callable[[dict[str, Any], Path], None]:
    def change(d: dict[str, Any], tmp: Path) -> None:
        for dotted, value in fields.items():
            target = d
            *parents, last = dotted.split("__")
            for key in parents:
                target = target[key]
            target[last] = value
    return change


def _user_ns(d: dict[str, Any], tmp: Path) -> None:
    d["root"]["path"] = str((tmp / "open-rootfs").resolve())  # see open_rootfs
    d["namespaces"].append({"type": "user", "path": None})
    d["uid_mappings"] = d["gid_mappings"] = MAPPING


def _host_net(d: dict[str, Any], tmp: Path) -> None:
    d["namespaces"] = [n for n in d["namespaces"] if n["type"] != "network"]
    d["network"]["mode"] = "host"


def _mounts(d: dict[str, Any], tmp: Path) -> None:
    (tmp / "shared").mkdir()
    (tmp / "shared" / "greeting").write_text("from the host\n")
    d["mounts"] += [{"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": []},
                    {"destination": "/mnt/b", "type": "bind", "source": str(tmp / "shared"),
                     "options": ["ro"]}]


def _status_line(out: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith(key + ":"))


ONLY_CHOWN = {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]}
SECCOMP_NO_MKDIR = {"mode": "profile", "profile": {
    "default_action": "allow", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "errno"}]}}

# feature, spec change, command, check(exit code, stdout, stderr)
INSIDE: list[tuple[str, Any, list[str], Callable[[int, str, str], bool]]] = [
    ("namespaces.user", _user_ns, ["/bin/cat", "/proc/self/uid_map"],
     lambda rc, out, err: out.split() == ["0", "100000", "65536"]),
    ("idmap", _user_ns, ["/bin/sh", "-c", "cat /proc/self/gid_map; id -u"],
     lambda rc, out, err: out.split() == ["0", "100000", "65536", "0"]),
    ("root.readonly", _set(root__readonly=True), ["/bin/touch", "/x"],
     lambda rc, out, err: rc != 0 and "Read-only file system" in err),
    ("mounts", _mounts, ["/bin/sh", "-c", "grep ' /mnt/t ' /proc/mounts; cat /mnt/b/greeting"],
     lambda rc, out, err: out.startswith("tmpfs /mnt/t tmpfs") and "from the host" in out),
    ("process.rlimits", _set(process__rlimits=[{"type": "nofile", "soft": 512, "hard": 1024}]),
     ["/bin/sh", "-c", "ulimit -n; ulimit -Hn"], lambda rc, out, err: out == "512\n1024\n"),
    ("process.capabilities", _set(process__capabilities=ONLY_CHOWN),
     ["/bin/cat", "/proc/self/status"],
     lambda rc, out, err: _status_line(out, "CapBnd") == _status_line(out, "CapEff")
     == "0000000000000001" and _status_line(out, "CapInh") == "0000000000000000"),
    ("process.no_new_privileges", _set(), ["/bin/cat", "/proc/self/status"],
     lambda rc, out, err: _status_line(out, "NoNewPrivs") == "1"),
    ("process.no_new_privileges", _set(process__no_new_privileges=False),
     ["/bin/cat", "/proc/self/status"], lambda rc, out, err: _status_line(out, "NoNewPrivs") == "0"),
    ("process.oom_score_adj", _set(process__oom_score_adj=123),
     ["/bin/cat", "/proc/self/oom_score_adj"], lambda rc, out, err: out == "123\n"),
    ("process.umask", _set(process__umask=0o027), ["/bin/sh", "-c", "umask"],
     lambda rc, out, err: out == "0027\n"),
    ("network.none", _set(), ["/bin/ls", "/sys/class/net"], lambda rc, out, err: out == "lo\n"),
    ("network.host", _host_net, ["/bin/ls", "/sys/class/net"],
     lambda rc, out, err: set(out.split()) == set(os.listdir("/sys/class/net"))),
    ("seccomp.profile", _set(seccomp=SECCOMP_NO_MKDIR), ["/bin/mkdir", "/tmp/denied"],
     lambda rc, out, err: rc != 0 and "Operation not permitted" in err),
    ("masked_paths", _set(masked_paths=["/etc/hostname", "/var"]),
     ["/bin/sh", "-c", "cat /etc/hostname; ls -A /var; echo end"],
     lambda rc, out, err: out == "end\n"),
    ("readonly_paths", _set(readonly_paths=["/home"]), ["/bin/touch", "/home/x"],
     lambda rc, out, err: rc != 0 and "Read-only file system" in err),
    ("sysctls", _set(sysctls={"kernel.msgmax": "8192"}), ["/bin/cat", "/proc/sys/kernel/msgmax"],
     lambda rc, out, err: out == "8192\n"),
]

# feature, spec change, cgroup v1 controller, file, check on its content (read on the host)
CGROUP: list[tuple[str, Any, str, str, Callable[[str], bool]]] = [
    ("resources.memory", _set(resources__memory={"limit": "64M"}), "memory",
     "memory.limit_in_bytes", lambda v: v == str(64 << 20)),
    ("resources.cpu", _set(resources__cpu={"shares": 512, "quota": 20000, "period": 100000}),
     "cpu", "cpu.shares", lambda v: v == "512"),
    ("resources.cpuset", _set(resources__cpu={"cpus": "0"}), "cpuset", "cpuset.cpus",
     lambda v: v == "0"),
    ("resources.pids", _set(resources__pids={"limit": 64}), "pids", "pids.max",
     lambda v: v == "64"),
    ("resources.devices", _set(resources__devices=[
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"}]),
     "devices", "devices.list", lambda v: "c 10:200 rwm" in v.splitlines()),
]


def _spec(driver: ExecDriver, rootfs: Path, args: list[str], change: Any, tmp: Path) -> Any:
    d = driver.default_spec(str(rootfs), args).model_dump()
    change(d, tmp)
    spec = validate_spec(d)
    driver.check_spec(spec)
    return spec


@pytest.mark.parametrize("feature,change,args,check", INSIDE,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(INSIDE)])
def test_inside(conformance_driver: ExecDriver, conformance_rootfs: Path, tmp_path: Path,
                open_rootfs: Path, feature: str, change: Any, args: list[str],
                check: Callable[[int, str, str], bool]) -> None:
    (tmp_path / "open-rootfs").symlink_to(open_rootfs)
    out, err = Output(), Output()
    spec = _spec(conformance_driver, conformance_rootfs, args, change, tmp_path)
    status = conformance_driver.run(new_id(), spec, stdio=Stdio(stdout=out.fd, stderr=err.fd))
    result = (status.exit_code, out.text(), err.text())
    assert check(*result), f"{feature}: {result}"


@pytest.mark.parametrize("feature,change,controller,name,check", CGROUP,
                         ids=[r[0] for r in CGROUP])
def test_cgroup(conformance_driver: ExecDriver, conformance_rootfs: Path, tmp_path: Path,
                feature: str, change: Any, controller: str, name: str,
                check: Callable[[str], bool]) -> None:
    cid = new_id()
    spec = _spec(conformance_driver, conformance_rootfs, ["/bin/sleep", "300"], change, tmp_path)
    conformance_driver.start(cid, spec, detach=True)
    cgroup = conformance_driver.info(cid).resources["cgroup"][0]
    value = Path(f"/sys/fs/cgroup/{controller}{cgroup}/{name}").read_text().strip()
    assert check(value), f"{feature}: {name} = {value!r}"
    conformance_driver.terminate(cid)
    assert not Path(f"/sys/fs/cgroup/{controller}{cgroup}").exists(), "cgroup left behind"


def test_namespaces(conformance_driver: ExecDriver, conformance_rootfs: Path) -> None:
    """Each namespace of the default spec is a new one (differs from the host's)."""
    script = "; ".join(f"readlink /proc/self/ns/{n}" for n in HOST_NS.values())
    spec = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/sh", "-c", script])
    assert spec.namespace_types() == set(HOST_NS)
    out = Output()
    assert conformance_driver.run(new_id(), spec, stdio=Stdio(stdout=out.fd)).exit_code == 0
    inside = out.text().split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in HOST_NS.values()]
    assert len(inside) == len(host)
    same = [n for n, a, b in zip(HOST_NS, inside, host, strict=True) if a == b]
    assert not same, f"shares the host's namespaces: {same}"


def test_join_namespace(conformance_driver: ExecDriver, conformance_rootfs: Path) -> None:
    """namespaces.join: a second container joins the first one's uts namespace."""
    first = new_id()
    spec = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/sleep", "300"])
    spec.hostname = "joined-uts"
    conformance_driver.start(first, spec, detach=True)
    pid = conformance_driver.info(first).pid
    d = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/hostname"]).model_dump()
    for ns in d["namespaces"]:
        if ns["type"] == "uts":
            ns["path"] = f"/proc/{pid}/ns/uts"
    out = Output()
    status = conformance_driver.run(new_id(), validate_spec(d), stdio=Stdio(stdout=out.fd))
    assert (status.exit_code, out.text()) == (0, "joined-uts\n")
    conformance_driver.terminate(first)


def test_every_declared_feature_is_checked() -> None:
    checked = ({r[0] for r in INSIDE} | {r[0] for r in CGROUP} | COVERED_BY_CONFORMANCE
               | {f"namespaces.{t}" for t in HOST_NS} | {"namespaces.join"})
    unchecked = set(RuncExampleDriver.features) - checked
    assert not unchecked, f"declared but never checked: {sorted(unchecked)}"
