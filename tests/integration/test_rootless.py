"""Rootless containers: the CLI and execdriver-oci run by an unprivileged user the tests
make (execdriver.testing.rootless), on the real kernel.

Each container gets a user namespace: container root is the user, container ids
from 1 are its /etc/subuid range (newuidmap/newgidmap). This host's cgroups are not
delegated to the user (v1 hierarchies), so the containers run without one: a warning,
and a limit asked for is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from execdriver.testing import rootless

pytestmark = pytest.mark.root

_why = rootless.unavailable()


@pytest.fixture(scope="module")
def user(busybox_rootfs: Path) -> Iterator[rootless.RootlessUser]:
    if _why:
        pytest.skip(f"rootless: {_why}")
    u = rootless.RootlessUser.make(busybox_rootfs)
    try:
        probe = u.run([u.python, "-c", "import execdriver, pydantic"])
        if probe.returncode != 0:
            pytest.skip("rootless: the test user cannot import this checkout "
                        f"({probe.stderr.strip().splitlines()[-1:]})")
        yield u
    finally:
        u.remove()


@pytest.fixture
def clean(user: rootless.RootlessUser) -> Iterator[rootless.RootlessUser]:
    """The user with nothing of its own running or recorded before and after the test."""
    assert user.processes() == []
    yield user
    deadline = time.monotonic() + 5
    while user.processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert user.processes() == [], "a process of the test user was left running"
    for name in ("execdriver", "execdriver-oci"):
        state = user.runtime_dir / name
        assert not state.exists() or os.listdir(state) == [], f"{state} was left behind"


def _status_ids(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])


def test_a_container_run_by_a_user_is_root_only_inside(clean: rootless.RootlessUser) -> None:
    u = clean
    out = u.execdriver("run", "--rootfs", str(u.rootfs), "--hostname", "rl", "--",
                       "/bin/sh", "-c", "id -u; hostname; cat /proc/self/uid_map; "
                       "touch /owned && echo wrote; exit 3")
    assert out.returncode == 3, out.stderr
    lines = out.stdout.split("\n")
    assert lines[:2] == ["0", "rl"]
    maps = [line.split() for line in lines[2:] if line.strip() and line != "wrote"]
    assert maps[0] == ["0", str(u.uid), "1"]
    sub = u.subordinate()
    if sub is not None:             # useradd gave it a range: ids from 1 are that range
        assert maps[1] == ["1", str(sub[0]), str(sub[1])]
    assert "wrote" in lines         # its own rootfs is root's inside
    # the cgroup warning, one line, and nothing else
    assert [line for line in out.stderr.splitlines() if line] == [
        line for line in out.stderr.splitlines() if line.startswith("rootless: no cgroup")]


def test_ids_map_to_the_user_and_its_subordinate_range(clean: rootless.RootlessUser) -> None:
    u = clean
    sub = u.subordinate()
    if sub is None:
        pytest.skip("useradd gave the test user no /etc/subuid range (login.defs)")
    run = u.execdriver("run", "-d", "--name", "ids", "--rootfs", str(u.rootfs),
                       "--user", "1000:1000", "--", "/bin/sleep", "60")
    assert run.returncode == 0, run.stderr
    try:
        info = json.loads(u.execdriver("info", "ids", "--format", "json").stdout)
        pid = info["pid"]
        assert info["resources"]["cgroup"][0]["version"] == 0     # none: not delegated
        assert _status_ids(pid) == (sub[0] + 999, sub[0] + 999)
        # the state is the user's, under its runtime directory
        assert (u.runtime_dir / "execdriver" / "ids").is_dir()
        assert (u.runtime_dir / "execdriver" / "ids").stat().st_uid == u.uid
    finally:
        u.execdriver("kill", "-s", "KILL", "ids")
        _wait_stopped(u, "ids")
        u.execdriver("rm", "ids")


def _wait_stopped(u: rootless.RootlessUser, cid: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = u.execdriver("list", "--format", "json")
        rows = json.loads(out.stdout or "[]")
        if all(r.get("id") != cid or str(r.get("status", "")).startswith("stopped")
               for r in rows):
            return
        time.sleep(0.05)
    raise AssertionError(f"{cid} did not stop")


def test_without_subordinate_ids_only_the_users_own_id_is_mapped(
        clean: rootless.RootlessUser) -> None:
    """A uid with no passwd entry has no /etc/subuid range: the runtime writes the one
    map the kernel allows (its own id, setgroups denied) without the helpers."""
    u = clean
    other = 64000 + os.getpid() % 1000
    run_dir = u.home / f"run-{other}"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, other, other)
    try:
        out = u.run([u.python, "-m", "execdriver", "run", "--rootfs", str(u.rootfs), "--",
                     "/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/setgroups; id -u"],
                    uid=other, env=u.env(XDG_RUNTIME_DIR=str(run_dir)))
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0", str(other), "1", "deny", "0"]
        assert os.listdir(run_dir / "execdriver") == []
    finally:
        shutil.rmtree(run_dir)


def test_a_detached_container_lives_its_whole_life_rootless(
        clean: rootless.RootlessUser) -> None:
    u = clean
    run = u.execdriver("run", "-d", "--name", "life", "--rootfs", str(u.rootfs), "--",
                       "/bin/sleep", "60")
    assert run.returncode == 0, run.stderr
    try:
        listed = json.loads(u.execdriver("list", "--format", "json").stdout)
        assert [(r["id"], r["status"]) for r in listed] == [("life", "running")]
        ex = u.execdriver("exec", "life", "--", "/bin/sh", "-c", "id -u; echo $$")
        assert ex.returncode == 0, ex.stderr
        assert ex.stdout.split()[0] == "0"
        paused = u.execdriver("pause", "life")
        assert paused.returncode != 0
        assert "has no cgroup" in paused.stderr and "not writable by uid" in paused.stderr
        assert len(paused.stderr.strip().splitlines()) == 1
        assert "Traceback" not in paused.stderr
    finally:
        killed = u.execdriver("kill", "-s", "KILL", "life")
        assert killed.returncode == 0, killed.stderr
        _wait_stopped(u, "life")
        removed = u.execdriver("rm", "life")
        assert removed.returncode == 0, removed.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--memory", "32M"], "rootless: cannot apply memory.limit: no cgroup can be made"),
    (["--pids-limit", "10"], "rootless: cannot apply pids.limit"),
    (["--network", "bridge"], "network 'bridge': a rootless container can only use none, host"),
])
def test_what_needs_root_is_refused_in_one_line(clean: rootless.RootlessUser,
                                                flags: list[str], message: str) -> None:
    u = clean
    out = u.execdriver("run", "--name", "refused", "--rootfs", str(u.rootfs), *flags, "--",
                       "/bin/true")
    assert out.returncode == 125
    errors = [line for line in out.stderr.splitlines() if line.startswith("execdriver:")]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_the_oci_runtime_runs_a_rootless_bundle(clean: rootless.RootlessUser) -> None:
    u = clean
    bundle, config = u.rootless_bundle("bundle")
    assert {"type": "user"} in config["linux"]["namespaces"]
    assert {"type": "network"} not in config["linux"]["namespaces"]
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": u.uid, "size": 1}]
    config["process"]["args"] = ["/bin/sleep", "60"]
    (bundle / "config.json").write_text(json.dumps(config))
    created = u.execdriver_oci("create", "--bundle", str(bundle), "oci1", leaves_running=True)
    assert created.returncode == 0, created.stderr
    try:
        state = json.loads(u.execdriver_oci("state", "oci1").stdout)
        assert state["status"] == "created"
        assert _status_ids(state["pid"])[0] == u.uid
        assert u.execdriver_oci("start", "oci1").returncode == 0
        listed = json.loads(u.execdriver_oci("list", "--format", "json").stdout)
        assert [(s["id"], s["status"], s["owner"]) for s in listed] == [
            ("oci1", "running", u.name)]
        ps = json.loads(u.execdriver_oci("ps", "--format", "json", "oci1").stdout)
        assert state["pid"] in ps
    finally:
        deleted = u.end_oci("oci1")
        assert deleted.returncode == 0, deleted.stderr


def test_a_map_beyond_the_users_ranges_is_refused_by_the_helper(
        clean: rootless.RootlessUser) -> None:
    u = clean
    if u.subordinate() is None:
        pytest.skip("useradd gave the test user no /etc/subuid range (login.defs)")
    from execdriver.spec import Spec
    spec = Spec(root={"path": str(u.rootfs)})  # type: ignore[arg-type]
    spec.process.args = ["/bin/true"]
    data = spec.model_dump(mode="json")
    data["namespaces"].append({"type": "user"})
    data["uid_mappings"] = [{"container_id": 0, "host_id": 0, "size": 1}]   # host root
    data["gid_mappings"] = [{"container_id": 0, "host_id": u.gid, "size": 1}]
    path = u.home / "spec.json"
    path.write_text(json.dumps(data))
    out = u.execdriver("run", "--spec", str(path))
    assert out.returncode == 125
    errors = [line for line in out.stderr.splitlines() if line.startswith("execdriver:")]
    assert len(errors) == 1 and "idmap" in errors[0] and "/etc/subuid" in errors[0], out.stderr


def _podman_setup(u: rootless.RootlessUser) -> tuple[Path, Path, dict[str, str]]:
    """A rootless podman of the user's own (vfs storage, no network, cgroupfs) whose
    runtime is execdriver-oci, run by the user's interpreter."""
    base = u.home / "podman"
    conf = base / "home" / ".config" / "containers"
    conf.mkdir(parents=True)
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{base}/runroot"\ngraphroot = "{base}/storage"\n')
    (conf / "containers.conf").write_text(
        '[containers]\nnetns = "none"\ndefault_ulimits = []\n'
        f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{base}/events.log"\n')
    runtime = base / "execdriver-oci"
    runtime.write_text("#!/bin/sh\nexec " + u.python + ' -c "import sys; from execdriver.cli.oci '
                       'import main; sys.exit(main())" "$@"\n')
    runtime.chmod(0o755)
    with tarfile.open(base / "rootfs.tar", "w") as tar:
        tar.add(u.rootfs, arcname=".")
    subprocess.run(["chown", "-R", f"{u.uid}:{u.gid}", str(base)], check=True)
    return base, runtime, u.env(HOME=str(base / "home"))


def _end_podman(u: rootless.RootlessUser, base: Path) -> None:
    """podman's user-namespace holder (its pause process) is the test's to end, by pid;
    its storage belongs to the user's subordinate ids."""
    pause = u.runtime_dir / "libpod" / "tmp" / "pause.pid"
    try:
        pid = int(pause.read_text())
    except (OSError, ValueError):
        pid = 0
    if pid and pid in u.processes():
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def test_rootless_podman_runs_containers_through_execdriver_oci(
        clean: rootless.RootlessUser) -> None:
    """Rootless podman runs its runtime as root in a user namespace of its own: the
    runtime is rootless there too (no cgroup, devices bound, state in the user's
    runtime directory)."""
    if shutil.which("podman") is None or shutil.which("conmon") is None:
        pytest.skip("podman/conmon not installed")
    u = clean
    if u.subordinate() is None:
        pytest.skip("rootless podman needs a subordinate id range and newuidmap/newgidmap")
    base, runtime, env = _podman_setup(u)

    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return u.run(["podman", "--runtime", str(runtime), *args], env=env, timeout=180)
    try:
        imported = podman("import", str(base / "rootfs.tar"), "localhost/bb:rootless")
        assert imported.returncode == 0, imported.stderr
        out = podman("run", "--rm", "localhost/bb:rootless", "/bin/sh", "-c",
                     "id -u; cat /proc/self/uid_map; ls /dev/null")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "0" and lines[1].split() == ["0", str(u.uid), "1"]
        assert lines[-1] == "/dev/null"
        started = podman("run", "-d", "--name", "pd", "localhost/bb:rootless", "sleep", "60")
        assert started.returncode == 0, started.stderr
        state = json.loads(podman("inspect", "pd").stdout)[0]["State"]
        assert state["Running"] and _status_ids(state["Pid"])[0] == u.uid
        ex = podman("exec", "pd", "/bin/sh", "-c", "echo in-$(id -u)")
        assert ex.returncode == 0 and ex.stdout.strip() == "in-0", ex.stderr
        removed = podman("rm", "--force", "--time", "0", "pd")
        assert removed.returncode == 0, removed.stderr
        assert podman("ps", "-aq").stdout.strip() == ""
    finally:
        podman("rm", "--all", "--force", "--time", "0")
        _end_podman(u, base)


def _loopback_server(greeting: bytes) -> tuple[int, list[bool]]:
    """A one-shot TCP server on the host's 127.0.0.1 (a thread); its port, and a list
    that gets True when somebody connected."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(15)
    seen: list[bool] = []

    def serve() -> None:
        with srv:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            seen.append(True)
            with conn:
                conn.sendall(greeting)
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], seen


@pytest.mark.parametrize("allow", [True, False])
def test_slirp4netns_networks_a_rootless_container(clean: rootless.RootlessUser,
                                                   allow: bool) -> None:
    """User-mode networking: tap0 is 10.0.2.100 with 10.0.2.2 as gateway; 10.0.2.2 is the
    host's loopback only when asked for (closed by default, as podman); slirp4netns ends
    with the container (the fixture checks no process of the user is left)."""
    if shutil.which("slirp4netns") is None:
        pytest.skip("slirp4netns is not installed")
    u = clean
    port, seen = _loopback_server(b"hello-over-slirp\n")
    mode = "slirp4netns:allow_host_loopback=true" if allow else "slirp4netns"
    out = u.execdriver("run", "--rootfs", str(u.rootfs), "--network", mode, "--", "/bin/sh",
                       "-c", f"ip -4 addr show tap0; cat /etc/resolv.conf; "
                       f"busybox nc -w 5 10.0.2.2 {port} </dev/null; echo nc=$?")
    assert out.returncode == 0, out.stderr
    assert "inet 10.0.2.100/24" in out.stdout
    assert "nameserver 10.0.2.3" in out.stdout
    if allow:
        assert "hello-over-slirp" in out.stdout and seen == [True]
    else:
        assert "hello-over-slirp" not in out.stdout and "nc=0" not in out.stdout
        assert seen == []
