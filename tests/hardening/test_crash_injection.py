"""SIGKILL the runtime at many points of create/run; afterwards terminate leaves nothing.

Crash points come two ways:

- *line points* (embedded runtime, ``crash_child.py``): the child counts the lines
  it executes in execdriver's own code and SIGKILLs itself at line N. A calibration
  run lists which functions run at which line; the points are picked around every
  call in the modules that claim, record, create or hand over a resource (state
  store, cgroups, launch/sync, network, LXC). Same point, same place, every run.
- *delays* (CLI and embedded): the test SIGKILLs the process after a delay spread
  over the measured duration of a create.

After each crash: terminate (CLI ``terminate --force`` or ``driver.terminate``)
succeeds, or says "does not exist" when the id was never claimed; then no cgroup,
state directory, host mount, process, veth, lease, nftables rule or LXC definition
is left, and the same id runs again. A killed *foreground* run must not leave its
container running, whatever the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hardening_helpers import assert_clean, cli, cli_popen, kill_marked, marked_pids, new_id, wait_for

pytestmark = pytest.mark.root

CHILD = str(Path(__file__).with_name("crash_child.py"))

# Modules where a resource is claimed, recorded, created or handed over.
RESOURCE_MODULES = ("execdriver/state.py", "libcontainer/container.py", "cgroups/__init__.py",
                    "cgroups/v1.py", "cgroups/v2.py", "kernel/launch.py", "kernel/sync.py",
                    "network/lifecycle.py", "network/links.py", "network/firewall.py",
                    "network/ipam.py", "network/nft.py", "lxc/driver.py", "lxc/monitor.py",
                    "lxc/host.py")


# How many points of each kind (the sum is what the issue counts: >= 50 distinct points).
N_NATIVE_LINES = 22
N_NATIVE_RUN_LINES = 6
N_NATIVE_DELAYS = 6
N_CLI_DELAYS = 12
N_CHROOT_CLI_DELAYS = 5
N_CHROOT_LINES = 4
N_BRIDGE_LINES = 8
N_LXC_LINES = 7


# --- the embedded runtime as a child we can kill -------------------------------------

def run_child(cfg: dict[str, Any], delay: float | None = None,
              hang_timeout: float = 5.0) -> dict[str, Any] | None:
    """Start crash_child.py, let it go; SIGKILL it after ``delay`` (if given).

    Returns the child's report when it finished its create, None when it died.
    A child still alive after ``hang_timeout`` (a foreground run that passed its
    crash point's line count while waiting) is killed then.
    """
    env = dict(os.environ, EDHARD=cfg["marker"], PYTHONFAULTHANDLER="1")
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report:
        cfg = dict(cfg, report=report.name)
        p = subprocess.Popen([sys.executable, CHILD, json.dumps(cfg)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            assert p.stdout is not None and p.stdin is not None
            ready = p.stdout.readline()
            assert ready == b"ready\n", f"crash child did not start: {_text(err)}"
            t0 = time.monotonic()
            p.stdin.write(b"g")
            p.stdin.flush()
            if delay is not None:
                time.sleep(max(0.0, delay - (time.monotonic() - t0)))
                p.send_signal(signal.SIGKILL)
            try:
                p.wait(hang_timeout)
            except subprocess.TimeoutExpired:
                if cfg.get("kill_at") is None and delay is None:
                    p.send_signal(signal.SIGABRT)      # faulthandler: where is it stuck?
                    p.wait()
                    raise AssertionError(f"crash child hung: {_text(err)}") from None
                p.send_signal(signal.SIGKILL)
                p.wait()
            if p.returncode == 0:
                return json.loads(report.read())
            assert p.returncode == -signal.SIGKILL, \
                f"crash child exited {p.returncode}: {_text(err)}"
            return None
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


def _text(f: Any) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")[-3000:]


def call_index(report: dict[str, Any], suffix: str) -> int:
    """Line index of the first call of a function whose "file:qualname" ends with ``suffix``."""
    return next(i for i, name in report["calls"] if name.endswith(suffix))


def select_points(report: dict[str, Any], n: int,
                  exclude: tuple[int, int] | None = None) -> list[int]:
    """``n`` line points spread over the calls into resource-handling modules
    (none in the half-open line range ``exclude``)."""
    calls = [(i, name) for i, name in report["calls"]]
    start = next(i for i, name in calls if name.endswith("StateStore.create"))
    candidates = sorted({i + d for i, name in calls if i >= start
                         and name.split(":")[0] in RESOURCE_MODULES for d in (1, 2)})
    if exclude is not None:
        candidates = [c for c in candidates if not exclude[0] <= c < exclude[1]]
    candidates = [c for c in candidates if c < report["lines"]] + [report["lines"]]
    if len(candidates) <= n:
        return candidates
    step = (len(candidates) - 1) / (n - 1)
    return sorted({candidates[round(k * step)] for k in range(n)})


# --- recovering and checking ----------------------------------------------------------

def terminate_embedded(root: str, driver_name: str, cid: str) -> str:
    from execdriver.errors import ContainerNotFound
    from execdriver.loader import load_driver
    driver = load_driver(driver_name, state_root=root)
    try:
        driver.terminate(cid)
    except ContainerNotFound as exc:
        return str(exc)
    return "terminated"


def reuse_embedded(root: str, driver_name: str, cid: str, rootfs: str, marker: str,
                   network: str = "none") -> str:
    """Run the id again (detached), report its status, terminate it."""
    from execdriver.driver import Stdio
    from execdriver.loader import load_driver
    driver = load_driver(driver_name, state_root=root)
    spec = driver.default_spec(rootfs, ["/bin/sleep", "1000"])
    spec.process.env["EDHARD"] = marker
    if network != "none":
        spec.network.mode = network
    null = os.open(os.devnull, os.O_RDWR)
    try:
        driver.start(cid, spec, stdio=Stdio(null, null, null), detach=True)
    finally:
        os.close(null)
    try:
        return driver.info(cid).status.value
    finally:
        driver.terminate(cid)


def recover(root: str, driver_name: str, cid: str, marker: str, rootfs: str, *,
            via_cli: bool, call: Callable[..., Any] = lambda f, *a: f(*a),
            netns: Any = None, network: str = "none", what: str = "") -> None:
    """terminate after a crash, check nothing is left, run the id again."""
    claimed = (Path(root) / cid).exists()
    if via_cli:
        r = cli(root, "terminate", "--force", cid)
        if claimed:
            assert r.returncode == 0, f"{what}: terminate --force: {r.stderr}"
        else:
            assert r.returncode == 125 and "does not exist" in r.stderr, f"{what}: {r.stderr}"
    else:
        out = call(terminate_embedded, root, driver_name, cid)
        assert out == "terminated", f"{what}: {out}"      # (idempotent: also when not claimed)
    assert_clean(root, cid, marker, rootfs, what=f"{what}: after terminate")
    if netns is not None:
        netns.assert_clean(root)
    status = call(reuse_embedded, root, driver_name, cid, rootfs, marker + "-again", network)
    assert status == "running", f"{what}: id reused: status {status}"
    assert_clean(root, cid, marker + "-again", rootfs, what=f"{what}: after reuse")
    if netns is not None:
        netns.assert_clean(root)


# --- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rootfs(busybox_rootfs: Path) -> str:
    return str(busybox_rootfs)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("crash") / "state")


@pytest.fixture
def marker() -> Any:
    m = new_id("m")
    yield m
    kill_marked(m)


def child_cfg(root: str, driver: str, cid: str, rootfs: str, marker: str, **kw: Any) -> dict[str, Any]:
    return {"root": root, "driver": driver, "id": cid, "rootfs": rootfs, "marker": marker,
            "mode": "start", "network": "none", "netns": None, "kill_at": None, "trace": True, **kw}


def calibrate(root: str, driver: str, rootfs: str, **kw: Any) -> dict[str, Any]:
    """One full traced create: which functions run at which line, and how long it takes."""
    cid, mark = new_id("cal"), new_id("m")
    try:
        report = run_child(child_cfg(root, driver, cid, rootfs, mark, **kw), hang_timeout=60)
        assert report is not None, "calibration create did not finish"
        untraced = run_child(child_cfg(root, driver, cid + "u", rootfs, mark, trace=False, **kw),
                             hang_timeout=60)
        assert untraced is not None
        report["untraced_ms"] = untraced["ms"]
        return report
    finally:
        for c in (cid, cid + "u"):
            terminate_embedded(root, driver, c)
        kill_marked(mark)


@pytest.fixture(scope="module")
def native_cal(root: str, rootfs: str) -> dict[str, Any]:
    return calibrate(root, "native", rootfs)


@pytest.fixture(scope="module")
def chroot_cal(root: str, rootfs: str) -> dict[str, Any]:
    return calibrate(root, "chroot", rootfs)


def _lxc_available() -> bool:
    try:
        from execdriver.loader import load_driver_class
        return load_driver_class("lxc").availability().available
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="module")
def lxc_cal(root: str, rootfs: str) -> dict[str, Any]:
    if not _lxc_available():
        pytest.skip("lxc driver not available")
    return calibrate(root, "lxc", rootfs)


def cli_duration(root: str, rootfs: str, driver: str) -> float:
    """Seconds a ``run -d`` takes through the CLI, from exec to exit (median of 3)."""
    times = []
    for _ in range(3):
        cid = new_id("cal")
        t0 = time.monotonic()
        r = cli(root, "run", "-d", "--driver", driver, "--name", cid, "--rootfs", rootfs,
                "--", "/bin/sleep", "1000")
        times.append(time.monotonic() - t0)
        assert r.returncode == 0, r.stderr
        cli(root, "terminate", "--force", cid, check=True)
    return sorted(times)[1]


@pytest.fixture(scope="module")
def cli_native_s(root: str, rootfs: str) -> float:
    return cli_duration(root, rootfs, "native")


@pytest.fixture(scope="module")
def cli_chroot_s(root: str, rootfs: str) -> float:
    return cli_duration(root, rootfs, "chroot")


def spread(n: int, lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * k / (n - 1) for k in range(n)]


# The CLI spends most of its time importing; the create is the last ~30%. Half the
# delays go there, densely; the rest cover imports and parsing.
CLI_FRACTIONS = spread(4, 0.0, 0.55) + spread(N_CLI_DELAYS - 4, 0.6, 1.02)
CHROOT_FRACTIONS = spread(N_CHROOT_CLI_DELAYS, 0.6, 1.0)


# --- native, embedded, detached start: line points ------------------------------------

@pytest.mark.parametrize("k", range(N_NATIVE_LINES))
def test_native_start_killed_at_line_point(k: int, native_cal: dict[str, Any], root: str,
                                           rootfs: str, marker: str) -> None:
    points = select_points(native_cal, N_NATIVE_LINES)
    if k >= len(points):
        pytest.skip("fewer distinct points than slots")
    cid = new_id("nl")
    run_child(child_cfg(root, "native", cid, rootfs, marker, kill_at=points[k]))
    recover(root, "native", cid, marker, rootfs, via_cli=False,
            what=f"native start killed at line {points[k]}")


def test_native_start_killed_before_the_id_is_claimed(root: str, rootfs: str, marker: str) -> None:
    cid = new_id("nl0")
    assert run_child(child_cfg(root, "native", cid, rootfs, marker, kill_at=1)) is None
    assert not (Path(root) / cid).exists()
    recover(root, "native", cid, marker, rootfs, via_cli=True, what="killed before mkdir")


# Found by this suite: terminate said "does not exist" and left the hidden directory of a
# create killed before its rename until the id was used again.
def test_terminate_after_a_crash_in_the_state_rename_leaves_no_hidden_directory(
        native_cal: dict[str, Any], root: str, rootfs: str, marker: str) -> None:
    cid = new_id("nh")
    point = call_index(native_cal, "state.py:_rename_noreplace") + 1
    assert run_child(child_cfg(root, "native", cid, rootfs, marker, kill_at=point)) is None
    r = cli(root, "terminate", "--force", cid)
    assert r.returncode == 125 and "does not exist" in r.stderr, r.stderr
    try:
        assert_clean(root, cid, marker, rootfs, what="killed before the state rename")
    finally:
        from execdriver.state import StateStore
        StateStore(root).sweep(cid)


# --- native, embedded, foreground run: line points, the container never outlives it ----

@pytest.mark.parametrize("k", range(N_NATIVE_RUN_LINES))
def test_native_foreground_run_killed_at_line_point(k: int, native_cal: dict[str, Any], root: str,
                                                    rootfs: str, marker: str) -> None:
    points = select_points(native_cal, N_NATIVE_RUN_LINES * 3)[1::3]
    if k >= len(points):
        pytest.skip("fewer distinct points than slots")
    cid = new_id("nr")
    run_child(child_cfg(root, "native", cid, rootfs, marker, mode="run", kill_at=points[k]),
              hang_timeout=3.0)
    left = wait_for(lambda: not marked_pids(marker), timeout=3.0)
    assert left, f"foreground run killed at line {points[k]}: still running {marked_pids(marker)}"
    recover(root, "native", cid, marker, rootfs, via_cli=False,
            what=f"native run killed at line {points[k]}")


# --- native, embedded: delays -------------------------------------------------------------

@pytest.mark.parametrize("k", range(N_NATIVE_DELAYS))
def test_native_start_killed_after_delay(k: int, native_cal: dict[str, Any], root: str,
                                         rootfs: str, marker: str) -> None:
    delay = native_cal["untraced_ms"] / 1000 * (k + 0.5) / N_NATIVE_DELAYS
    cid = new_id("nd")
    run_child(child_cfg(root, "native", cid, rootfs, marker, trace=False), delay=delay)
    recover(root, "native", cid, marker, rootfs, via_cli=False,
            what=f"native start killed after {delay * 1000:.1f} ms")


# --- native and chroot through the CLI: delays ---------------------------------------------

def _cli_crash(root: str, rootfs: str, driver: str, delay: float, marker: str) -> str:
    cid = new_id("c" + driver[:2])
    p = cli_popen(root, "run", "-d", "--driver", driver, "--name", cid, "-e", f"EDHARD={marker}",
                  "--rootfs", rootfs, "--", "/bin/sleep", "1000", env={"EDHARD": marker},
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return cid


@pytest.mark.parametrize("fraction", CLI_FRACTIONS, ids=[f"{f:.2f}" for f in CLI_FRACTIONS])
def test_cli_native_run_detached_killed_after_delay(fraction: float, cli_native_s: float, root: str,
                                                    rootfs: str, marker: str) -> None:
    cid = _cli_crash(root, rootfs, "native", cli_native_s * fraction, marker)
    recover(root, "native", cid, marker, rootfs, via_cli=True,
            what=f"CLI run -d killed after {cli_native_s * fraction * 1000:.0f} ms")


@pytest.mark.parametrize("fraction", CHROOT_FRACTIONS, ids=[f"{f:.2f}" for f in CHROOT_FRACTIONS])
def test_cli_chroot_run_detached_killed_after_delay(fraction: float, cli_chroot_s: float, root: str,
                                                    rootfs: str, marker: str) -> None:
    cid = _cli_crash(root, rootfs, "chroot", cli_chroot_s * fraction, marker)
    recover(root, "chroot", cid, marker, rootfs, via_cli=True,
            what=f"CLI chroot run -d killed after {cli_chroot_s * fraction * 1000:.0f} ms")


@pytest.mark.parametrize("k", range(N_CHROOT_LINES))
def test_chroot_start_killed_at_line_point(k: int, chroot_cal: dict[str, Any], root: str,
                                           rootfs: str, marker: str) -> None:
    points = select_points(chroot_cal, N_CHROOT_LINES)
    if k >= len(points):
        pytest.skip("fewer distinct points than slots")
    cid = new_id("cl")
    run_child(child_cfg(root, "chroot", cid, rootfs, marker, kill_at=points[k]))
    recover(root, "chroot", cid, marker, rootfs, via_cli=False,
            what=f"chroot start killed at line {points[k]}")


# --- native, bridge network, inside a scratch netns -----------------------------------------

@pytest.fixture(scope="module")
def scratch() -> Any:
    from scratch_netns import ScratchNetns
    with ScratchNetns("edhard") as ns:
        yield ns


@pytest.fixture(scope="module")
def bridge_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("crashnet") / "state")


@pytest.fixture(scope="module")
def bridge_cal(scratch: Any, bridge_root: str, rootfs: str) -> dict[str, Any]:
    cid, mark = new_id("cal"), new_id("m")
    try:
        report = run_child(child_cfg(bridge_root, "native", cid, rootfs, mark,
                                     network="bridge", netns=scratch.path), hang_timeout=60)
        assert report is not None
        return report
    finally:
        scratch.call(terminate_embedded, bridge_root, "native", cid)
        kill_marked(mark)
        scratch.assert_clean(bridge_root)


@pytest.mark.parametrize("k", range(N_BRIDGE_LINES))
def test_bridge_start_killed_at_line_point(k: int, bridge_cal: dict[str, Any], scratch: Any,
                                           bridge_root: str, rootfs: str, marker: str) -> None:
    # Points around the network calls first (veth, addresses, rules, lease), then the rest.
    calls = bridge_cal["calls"]
    net = {"calls": [(i, n) for i, n in calls if n.startswith("network/")
                     or n.endswith("StateStore.create")], "lines": bridge_cal["lines"]}
    points = select_points(net, N_BRIDGE_LINES)
    if k >= len(points):
        pytest.skip("fewer distinct points than slots")
    cid = new_id("bl")
    run_child(child_cfg(bridge_root, "native", cid, rootfs, marker, kill_at=points[k],
                        network="bridge", netns=scratch.path), hang_timeout=60)
    recover(bridge_root, "native", cid, marker, rootfs, via_cli=False, call=scratch.call,
            netns=scratch, network="bridge", what=f"bridge start killed at line {points[k]}")


def test_host_netns_untouched() -> None:
    """The bridge cases ran in the scratch netns: nothing of ours in the host's."""
    names = [n for n in os.listdir("/sys/class/net") if n.startswith(("vexd", "execdriver"))]
    assert names == []


# --- LXC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", range(N_LXC_LINES))
def test_lxc_start_killed_at_line_point(k: int, lxc_cal: dict[str, Any], root: str, rootfs: str,
                                        marker: str) -> None:
    points = select_points(lxc_cal, N_LXC_LINES)
    if k >= len(points):
        pytest.skip("fewer distinct points than slots")
    cid = new_id("ll")
    run_child(child_cfg(root, "lxc", cid, rootfs, marker, kill_at=points[k]))
    recover(root, "lxc", cid, marker, rootfs, via_cli=False,
            what=f"lxc start killed at line {points[k]}")


def test_lxc_terminate_kills_what_joins_after_its_first_sweep(root: str, rootfs: str, marker: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if not _lxc_available():
        pytest.skip("lxc driver not available")
    from execdriver.kernel import cgroups
    cid = new_id("lj")
    from execdriver.driver import Stdio
    from execdriver.loader import load_driver
    driver = load_driver("lxc", state_root=root)
    spec = driver.default_spec(rootfs, ["/bin/sleep", "1000"])
    null = os.open(os.devnull, os.O_RDWR)
    try:
        driver.start(cid, spec, stdio=Stdio(null, null, null), detach=True)
    finally:
        os.close(null)
    assert wait_for(lambda: driver.info(cid).status.value == "running", timeout=20)

    def as_if_killed_before_recording(st: Any) -> None:
        st.status = "creating"
        st.pid = st.pid_start = None
        st.monitor_pid = st.monitor_start = None
    driver.state.update(cid, as_if_killed_before_recording)
    from execdriver_lxc import host
    os.unlink(host.monitor_file(str(driver.state.dir(cid) / "lxc")))   # its first record
    late = subprocess.Popen(["/bin/sleep", "1000"], env={"EDHARD": marker})
    real_read_procs, moved = cgroups.read_procs, []

    def read_then_join(path: str) -> list[int]:
        pids = real_read_procs(path)
        if not moved and os.path.basename(path).startswith("execdriver-lxc."):
            with open(os.path.join(path, "cgroup.procs"), "w") as f:   # liblxc, a moment late
                f.write(str(late.pid))
            moved.append(path)
        return pids
    monkeypatch.setattr(cgroups, "read_procs", read_then_join)
    try:
        try:
            driver.terminate(cid)
            outcome = "terminated"
        except Exception as exc:  # noqa: BLE001 - the failure is what this test is about
            outcome = f"{type(exc).__name__}: {exc}"
        assert moved, "the test did not get to move a process in"
        assert outcome == "terminated", outcome
        assert wait_for(lambda: late.poll() is not None, timeout=3), "the late process survived"
    finally:
        monkeypatch.undo()
        late.kill()
        late.wait()
        if (Path(root) / cid).exists():
            terminate_embedded(root, "lxc", cid)
    assert_clean(root, cid, marker, rootfs)


N_LXC_RUN_LINES = 5


@pytest.fixture(scope="module")
def lxc_run_cal(root: str, rootfs: str) -> dict[str, Any]:
    """A traced foreground run of a uid 1000 container (``true``: it ends)."""
    if not _lxc_available():
        pytest.skip("lxc driver not available")
    return calibrate(root, "lxc", rootfs, mode="run", user=1000, args=["/bin/true"])


@pytest.mark.parametrize("k", range(N_LXC_RUN_LINES))
def test_lxc_foreground_run_as_uid1000_killed_around_the_monitor_fork(
        k: int, lxc_run_cal: dict[str, Any], root: str, rootfs: str, marker: str) -> None:
    """An embedding program SIGKILLed while its lxc driver.run() starts a non-root
    container, at line points from forking the monitor to its release: the monitor
    starts nothing, or the watcher kills what it started."""
    lo = call_index(lxc_run_cal, "lxc/monitor.py:spawn")
    hi = call_index(lxc_run_cal, "LXCDriver._await_running") + 3
    points = [lo + round((hi - lo) * j / (N_LXC_RUN_LINES - 1)) for j in range(N_LXC_RUN_LINES)]
    _kill_embedded_lxc_run(root, rootfs, marker, 1000, kill_at=points[k])


@pytest.mark.parametrize("user", [0, 1000], ids=["root", "uid1000"])
def test_killed_embedded_lxc_foreground_run_leaves_no_container_running(
        user: int, root: str, rootfs: str, marker: str) -> None:
    """An embedding program SIGKILLed while its lxc driver.run() waits for a running
    container: a root init dies with the monitor (PDEATHSIG), another through the watcher."""
    if not _lxc_available():
        pytest.skip("lxc driver not available")
    _kill_embedded_lxc_run(root, rootfs, marker, user, delay=1.0)


def _kill_embedded_lxc_run(root: str, rootfs: str, marker: str, user: int,
                           kill_at: int | None = None, delay: float | None = None) -> None:
    cid = new_id("lr")
    run_child(child_cfg(root, "lxc", cid, rootfs, marker, mode="run", user=user,
                        trace=kill_at is not None, kill_at=kill_at), delay=delay, hang_timeout=3.0)
    what = f"lxc uid {user} run killed at {f'line {kill_at}' if kill_at else 'a running container'}"
    try:
        left = wait_for(lambda: not marked_pids(marker), timeout=3.0)
        assert left, f"{what}: still running {marked_pids(marker)}"
    finally:
        recover(root, "lxc", cid, marker, rootfs, via_cli=False, what=what)


# An embedding program whose lxc driver forks its monitors through the monitor server (a
# driver's second start on): the server outlives it, kills its foreground containers, exits.
SERVED_RUN = """
import os, sys, time
from execdriver.driver import Stdio
from execdriver.loader import load_driver
root, rootfs, cid, marker, uid = sys.argv[1:6]
os.environ["EXECDRIVER_LXC_MONITOR_SERVER"] = "1"
d = load_driver("lxc", state_root=root)
deadline = time.monotonic() + 20
while d._monitor_server() is None and time.monotonic() < deadline:
    time.sleep(0.02)
spec = d.default_spec(rootfs, ["/bin/sleep", "1000"])
spec.process.env["EDHARD"] = marker
if int(uid):
    spec.process.user.uid = spec.process.user.gid = int(uid)
    spec.process.capabilities = spec.process.capabilities.with_changes([], ["ALL"])
null = os.open(os.devnull, os.O_RDWR)
handle = d.start(cid, spec, stdio=Stdio(null, null, null))
print(handle.pid, d._server.pid if d._server else 0, flush=True)
handle.wait()
"""


@pytest.mark.parametrize("user", [0, 1000], ids=["root", "uid1000"])
def test_killed_embedded_lxc_run_through_the_monitor_server_leaves_nothing_running(
        user: int, root: str, rootfs: str, marker: str) -> None:
    if not _lxc_available():
        pytest.skip("lxc driver not available")
    cid = new_id("ls")
    p = subprocess.Popen([sys.executable, "-c", SERVED_RUN, root, rootfs, cid, marker, str(user)],
                         stdout=subprocess.PIPE, env=dict(os.environ, EDHARD="rt-" + marker))
    try:
        assert p.stdout is not None
        mon, server = (int(x) for x in p.stdout.readline().split())
        stat = Path(f"/proc/{mon}/stat").read_bytes()
        assert server and int(stat[stat.rfind(b")") + 2:].split()[1]) == server, \
            "the monitor was not forked by the monitor server"
        assert wait_for(lambda: marked_pids(marker), timeout=10), "container did not start"
        p.kill()
        p.wait()
        left = wait_for(lambda: not marked_pids(marker) and not marked_pids("rt-" + marker), 3.0)
        assert left, f"uid {user}: left running {marked_pids(marker)} {marked_pids('rt-' + marker)}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()
        kill_marked("rt-" + marker)
        recover(root, "lxc", cid, marker, rootfs, via_cli=False, what=f"served run uid {user}")


# --- a killed foreground run never leaves its container running -----------------------------

def _kill_foreground(root: str, rootfs: str, driver: str, marker: str,
                     extra: list[str]) -> tuple[str, list[int]]:
    """Start ``execdriver run`` (foreground), wait until the container runs, SIGKILL the
    CLI; return the id and what of it (container or runtime forks) still runs a moment later."""
    cid = new_id("fg")
    p = cli_popen(root, "run", "--driver", driver, "--name", cid, "-e", f"EDHARD={marker}",
                  *extra, "--rootfs", rootfs, "--", "/bin/sleep", "1000",
                  env={"EDHARD": "cli-" + marker}, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: marked_pids(marker), timeout=15), "container did not start"
        p.send_signal(signal.SIGKILL)
        p.wait()

        def alive() -> list[int]:
            return marked_pids(marker) + marked_pids("cli-" + marker)
        wait_for(lambda: not alive(), timeout=3.0)
        return cid, alive()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


FOREGROUND_CASES = [
    pytest.param("native", [], id="native-root"),
    pytest.param("chroot", [], id="chroot-root"),
    pytest.param("lxc", [], id="lxc-root"),
    pytest.param("lxc", ["--user", "1000:1000", "--cap-drop", "ALL"], id="lxc-uid1000"),
    pytest.param("native", ["--user", "1000:1000", "--cap-drop", "ALL"], id="native-uid1000"),
    pytest.param("chroot", ["--user", "1000:1000", "--cap-drop", "ALL"], id="chroot-uid1000"),
]


@pytest.mark.parametrize("driver,extra", FOREGROUND_CASES)
def test_killed_foreground_run_leaves_no_container_running(driver: str, extra: list[str], root: str,
                                                           rootfs: str, marker: str) -> None:
    if driver == "lxc" and not _lxc_available():
        pytest.skip("lxc driver not available")
    cid, running = _kill_foreground(root, rootfs, driver, marker, extra)
    try:
        assert running == [], f"{driver} {extra}: container outlived its killed run: {running}"
    finally:
        recover(root, driver, cid, marker, rootfs, via_cli=True, what=f"foreground {driver}")


@pytest.fixture(scope="module")
def open_rootfs() -> Any:
    """A rootfs the mapped root of a user namespace can reach (pytest's tmp is 0700)."""
    import shutil

    from execdriver.rootfs import build_busybox
    top = tempfile.mkdtemp(prefix="edhard-userns-")
    os.chmod(top, 0o755)
    try:
        yield str(build_busybox(Path(top) / "rootfs"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("identity", [
    pytest.param({}, id="root"),
    pytest.param({"user": 1000}, id="uid1000"),
    pytest.param({"userns": True}, id="userns"),
])
def test_killed_embedded_foreground_run_leaves_no_container_running(
        identity: dict[str, Any], root: str, open_rootfs: str, marker: str) -> None:
    """An embedding program killed while its driver.run() waits: its container goes too
    (the parent-death signal survives the uid change and the user namespace)."""
    rootfs = open_rootfs
    cid = new_id("fe")
    cfg = child_cfg(root, "native", cid, rootfs, marker, mode="run", trace=False, **identity)
    run_child(cfg, delay=1.0)
    try:
        wait_for(lambda: not marked_pids(marker), timeout=3.0)
        assert marked_pids(marker) == [], f"{identity}: container outlived its killed runtime"
    finally:
        recover(root, "native", cid, marker, rootfs, via_cli=True, what=f"embedded run {identity}")


@pytest.mark.parametrize("user", ["0", "1000"], ids=["root", "uid1000"])
def test_killed_foreground_exec_leaves_no_process_running(user: str, root: str, rootfs: str,
                                                         marker: str) -> None:
    """``execdriver exec`` SIGKILLed while it waits: the exec'd process goes too."""
    cid = new_id("fx")
    cli(root, "run", "-d", "--name", cid, "--rootfs", rootfs, "--", "/bin/sleep", "1000", check=True)
    try:
        p = cli_popen(root, "exec", "-u", user, "-e", f"EDHARD={marker}", cid, "--",
                      "/bin/sleep", "999", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: marked_pids(marker), timeout=10), "exec did not start"
        p.send_signal(signal.SIGKILL)
        p.wait()
        wait_for(lambda: not marked_pids(marker), timeout=3.0)
        assert marked_pids(marker) == [], f"exec -u {user}: process outlived the killed exec"
    finally:
        cli(root, "terminate", "--force", cid, check=True)
        assert_clean(root, cid, marker, rootfs)
