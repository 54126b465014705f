"""Every feature the nspawn driver declares, checked for real (root, systemd-nspawn).

The conformance suite (tests/conformance/test_nspawn_driver.py) covers what every
driver shares; this covers the rest of ``NspawnDriver.features``, one row per
feature, each running a real container, so that a declared feature is one that
works. ``test_every_declared_feature_is_checked`` keeps the two in step. Then exec:
an exec'd process has the container's capability sets, ids, no_new_privs, rlimits
and env, not nsenter's (or the monitor's) full root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from execdriver.driver import ExecDriver, Stdio
from execdriver.spec import validate_spec
from execdriver.testing.helpers import Output, new_id

pytestmark = pytest.mark.root
EXECDRIVER = str(Path(sys.executable).with_name("execdriver"))

# Checked by the conformance suite.
COVERED_BY_CONFORMANCE = {"pause", "exec", "stats"}
HOST_NS = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt"}


@pytest.fixture
def conformance_driver_name() -> str:
    return "nspawn"


def _set(**fields: Any) -> Callable[[dict[str, Any], Path], None]:
    def change(d: dict[str, Any], tmp: Path) -> None:
        for dotted, value in fields.items():
            target = d
            *parents, last = dotted.split("__")
            for key in parents:
                target = target[key]
            target[last] = value
    return change


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


ONLY_CHOWN_KILL = {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN", "CAP_KILL"],
                   "permitted": ["CAP_CHOWN", "CAP_KILL"]}
CHOWN_KILL_MASK = f"{(1 << 0) | (1 << 5):016x}"

# feature, spec change, command, check(exit code, stdout, stderr)
INSIDE: list[tuple[str, Any, list[str], Callable[[int, str, str], bool]]] = [
    ("process.rlimits", _set(process__rlimits=[{"type": "nofile", "soft": 512, "hard": 1024}]),
     ["/bin/sh", "-c", "ulimit -n; ulimit -Hn"], lambda rc, out, err: out == "512\n1024\n"),
    ("root.readonly", _set(root__readonly=True), ["/bin/touch", "/x"],
     lambda rc, out, err: rc != 0 and "Read-only file system" in err),
    ("mounts", _mounts, ["/bin/sh", "-c", "grep ' /mnt/t ' /proc/mounts; cat /mnt/b/greeting; "
                         "touch /mnt/b/x"],
     lambda rc, out, err: out.startswith("tmpfs /mnt/t tmpfs") and "from the host" in out
     and rc != 0 and "Read-only file system" in err),
    ("process.capabilities", _set(process__capabilities=ONLY_CHOWN_KILL),
     ["/bin/cat", "/proc/self/status"],
     lambda rc, out, err: _status_line(out, "CapBnd") == _status_line(out, "CapEff")
     == _status_line(out, "CapPrm") == CHOWN_KILL_MASK
     and _status_line(out, "CapInh") == _status_line(out, "CapAmb") == "0" * 16),
    ("process.no_new_privileges", _set(), ["/bin/cat", "/proc/self/status"],
     lambda rc, out, err: _status_line(out, "NoNewPrivs") == "1"),
    ("process.no_new_privileges", _set(process__no_new_privileges=False),
     ["/bin/cat", "/proc/self/status"], lambda rc, out, err: _status_line(out, "NoNewPrivs") == "0"),
    ("process.oom_score_adj", _set(process__oom_score_adj=123),
     ["/bin/cat", "/proc/self/oom_score_adj"], lambda rc, out, err: out == "123\n"),
    ("process.umask", _set(), ["/bin/sh", "-c", "umask"], lambda rc, out, err: out == "0022\n"),
    ("network.none", _set(), ["/bin/ls", "/sys/class/net"], lambda rc, out, err: out == "lo\n"),
    ("network.host", _host_net, ["/bin/ls", "/sys/class/net"],
     lambda rc, out, err: set(out.split()) == set(os.listdir("/sys/class/net"))),
    ("hostname", _set(hostname="nspawn-box"), ["/bin/hostname"],
     lambda rc, out, err: out == "nspawn-box\n"),
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
                feature: str, change: Any, args: list[str],
                check: Callable[[int, str, str], bool]) -> None:
    out, err = Output(), Output()
    spec = _spec(conformance_driver, conformance_rootfs, args, change, tmp_path)
    status = conformance_driver.run(new_id(), spec, stdio=Stdio(stdout=out.fd, stderr=err.fd))
    result = (status.exit_code, out.text(), err.text())
    assert check(*result), f"{feature}: {result}"


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


def test_every_declared_feature_is_checked() -> None:
    from execdriver_nspawn.driver import NspawnDriver
    checked = ({r[0] for r in INSIDE} | COVERED_BY_CONFORMANCE
               | {f"namespaces.{t}" for t in HOST_NS})
    unchecked = set(NspawnDriver.features) - checked
    assert not unchecked, f"declared but never checked: {sorted(unchecked)}"


# -- exec: the container's privileges, not nsenter's ---------------------------------

EXEC_SCRIPT = ("grep -E '^(Cap|NoNewPrivs|Uid|Gid|Groups)' /proc/self/status; ulimit -n; "
               "env; pwd; for n in pid mnt net; do readlink /proc/self/ns/$n; done")


def test_exec_gets_the_containers_privileges(conformance_driver: ExecDriver,
                                             conformance_rootfs: Path) -> None:
    spec = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/sleep", "300"])
    spec = validate_spec(spec.model_dump() | {"process": spec.process.model_dump() | {
        "capabilities": ONLY_CHOWN_KILL, "cwd": "/tmp", "env": {"PATH": "/bin", "ONLY": "this"},
        "rlimits": [{"type": "nofile", "soft": 300, "hard": 400}]}})
    cid = new_id()
    conformance_driver.start(cid, spec, detach=True)
    leader = conformance_driver.info(cid).pid
    out, err = Output(), Output()
    process = conformance_driver.process_for_exec(cid, ["/bin/sh", "-c", EXEC_SCRIPT])
    status = conformance_driver.exec(cid, process, stdio=Stdio(stdout=out.fd, stderr=err.fd))
    text = out.text()
    assert status.exit_code == 0, (text, err.text())
    for key in ("CapBnd", "CapEff", "CapPrm"):
        assert _status_line(text, key) == CHOWN_KILL_MASK, (key, text)
    assert _status_line(text, "CapInh") == _status_line(text, "CapAmb") == "0" * 16
    assert _status_line(text, "NoNewPrivs") == "1"
    assert _status_line(text, "Uid").split() == ["0"] * 4
    lines = text.splitlines()
    assert "300" in lines                                   # ulimit -n
    env = {line.split("=", 1)[0] for line in lines if "=" in line}
    assert env <= {"PATH", "ONLY", "PWD", "SHLVL"} and "ONLY" in env, env
    assert "/tmp" in lines                                  # pwd
    ns = [os.readlink(f"/proc/{leader}/ns/{n}") for n in ("pid", "mnt", "net")]
    assert lines[-3:] == ns, (lines[-3:], ns)
    conformance_driver.terminate(cid)


def test_exec_with_another_user_and_fewer_capabilities(conformance_driver: ExecDriver,
                                                       conformance_rootfs: Path) -> None:
    """A process given to exec is applied as given: its user and its capability sets."""
    spec = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/sleep", "300"])
    cid = new_id()
    conformance_driver.start(cid, spec, detach=True)
    process = conformance_driver.process_for_exec(cid, ["/bin/cat", "/proc/self/status"])
    process.user.uid, process.user.gid, process.user.additional_gids = 1000, 1001, [1002]
    process.capabilities.bounding = ["CAP_KILL"]
    process.capabilities.effective = process.capabilities.permitted = []
    out = Output()
    status = conformance_driver.exec(cid, process, stdio=Stdio(stdout=out.fd))
    text = out.text()
    assert status.exit_code == 0, text
    assert _status_line(text, "Uid").split() == ["1000"] * 4
    assert _status_line(text, "Gid").split() == ["1001"] * 4
    assert _status_line(text, "Groups") == "1002"
    assert _status_line(text, "CapBnd") == f"{1 << 5:016x}"
    assert _status_line(text, "CapEff") == _status_line(text, "CapPrm") == "0" * 16
    conformance_driver.terminate(cid)


def test_exec_of_a_missing_command_is_127(conformance_driver: ExecDriver,
                                          conformance_rootfs: Path) -> None:
    spec = conformance_driver.default_spec(str(conformance_rootfs), ["/bin/sleep", "300"])
    cid = new_id()
    conformance_driver.start(cid, spec, detach=True)
    err = Output()
    status = conformance_driver.exec(cid, conformance_driver.process_for_exec(cid, ["/no/such"]),
                                     stdio=Stdio(stderr=err.fd))
    assert status.exit_code == 127
    assert "/no/such" in err.text()
    conformance_driver.terminate(cid)


# -- availability ----------------------------------------------------------------------

def test_drivers_says_why_without_systemd_nspawn(tmp_path: Path) -> None:
    """systemd-nspawn is found through PATH: without it, `execdriver drivers` says so."""
    import json
    env = {**os.environ, "PATH": str(tmp_path), "EXECDRIVER_SERVER": "off"}
    out = subprocess.run([EXECDRIVER, "drivers", "--format", "json"], capture_output=True,
                         text=True, env=env, check=True, timeout=60).stdout
    nspawn = next(d for d in json.loads(out) if d["name"] == "nspawn")
    assert nspawn["available"] is False
    assert nspawn["reason"] == "systemd-nspawn not found (apt-get install systemd-container)"
