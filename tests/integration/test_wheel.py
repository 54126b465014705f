"""The package as pip installs it (issue #16): an sdist that builds, a platform wheel
with the C monitor and the compiled front, a fresh venv that runs a container with
them, a moved venv that still does, and an uninstall that leaves nothing (root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import execdriver

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
NAME = f"execdriver-{execdriver.__version__}"


def sh(*argv: object, cwd: Path | None = None, **env: str) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env}, cwd=cwd, check=False)
    assert r.returncode == 0, f"{argv}: {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


def is_elf(path: Path | bytes) -> bool:
    head = path[:4] if isinstance(path, bytes) else path.read_bytes()[:4]
    return head == b"\x7fELF"


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.isdir(REPO / ".git") and not (REPO / "PKG-INFO").exists():
        pytest.skip("not a source tree")
    out = tmp_path_factory.mktemp("sdist")
    # the build backend, run as pip would (from the tree, into out)
    sh(sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
       "print(b.build_sdist(sys.argv[1]))", out, PYTHONDONTWRITEBYTECODE="1")
    found = list(out.glob("execdriver-*.tar.gz"))
    assert len(found) == 1, found
    return found[0]


def build_wheel(sdist: Path, out: Path, **env: str) -> Path:
    """The wheel pip builds from the sdist (so the sdist must be complete)."""
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
       "-w", out, sdist, **env)
    found = list(out.glob("execdriver-*.whl"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def wheel(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(sdist, tmp_path_factory.mktemp("wheel"))


def test_the_sdist_carries_docs_tests_and_the_c_sources_not_binaries(sdist: Path) -> None:
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "setup.py", "setup.cfg",
                   "pyproject.toml", "docs/user-guide.md", "docs/api-reference.md",
                   "tests/conftest.py", "tests/integration/test_wheel.py",
                   "execdriver/kernel/waiter.c", "execdriver/cli/client.c",
                   "scripts/bin/execdriver", "scripts/bin/execdriver-oci"):
        assert needed in names, f"the sdist lacks {needed}"
    assert not [n for n in names if n.endswith("execdriver-waiter") or "__pycache__" in n]


def test_the_wheel_is_for_this_platform_and_holds_the_compiled_helpers(wheel: Path) -> None:
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name == f"{NAME}-py3-none-{plat}.whl"
    with zipfile.ZipFile(wheel) as z:
        assert is_elf(z.read("execdriver/kernel/execdriver-waiter"))
        for cmd in ("execdriver", "execdriver-oci"):
            info = z.getinfo(f"{NAME}.data/scripts/{cmd}")
            assert is_elf(z.read(info)), f"{cmd} is not the compiled front"
            assert (info.external_attr >> 16) & 0o111, f"{cmd} is not executable"
        entry_points = z.read(f"{NAME}.dist-info/entry_points.txt").decode()
    assert "console_scripts" not in entry_points       # pip would overwrite the binaries


def static_libc() -> bool:
    """Can this host link a static program (what the init of ``run --init`` needs)?"""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "t.c")
        src.write_text("int main(void) { return 0; }\n")
        return subprocess.run(["cc", "-static", "-o", str(Path(tmp, "t")), str(src)],
                              capture_output=True, check=False).returncode == 0


def test_the_wheel_holds_the_static_init_where_the_host_can_link_one(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        if not static_libc():
            assert "execdriver/kernel/execdriver-init" not in names
            return
        init = z.read("execdriver/kernel/execdriver-init")
    assert is_elf(init)
    assert b"/lib64/ld-linux" not in init and b"/lib/ld-linux" not in init, "not static"


def test_without_a_compiler_the_wheel_holds_python_stand_ins(sdist: Path, tmp_path: Path) -> None:
    wheel = build_wheel(sdist, tmp_path, EXECDRIVER_NO_C="1")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "execdriver/kernel/execdriver-waiter" not in names
        assert "execdriver/kernel/execdriver-init" not in names
        script = z.read(f"{NAME}.data/scripts/execdriver").decode()
    assert script.startswith("#!python\n") and "from execdriver.cli.main import main" in script


def monitor_of(state: Path, cid: str) -> str:
    record = json.loads((state / cid / "state.json").read_text())
    return os.readlink(f"/proc/{record['monitor_pid']}/exe")


def user_env(**extra: str) -> dict[str, str]:
    """A user's environment: none of the test suite's EXECDRIVER_* or PYTHON* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECDRIVER", "PYTHON"))}
    return {**env, **extra}


def cmd(venv: Path, *args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([venv / "bin" / "execdriver", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def server_status(venv: Path, env: dict[str, str]) -> dict[str, Any]:
    r = cmd(venv, "server", "status", "--format", "json", env=env)
    status: dict[str, Any] = json.loads(r.stdout)
    return status


def wait_for(check: Callable[[], object], what: str, timeout: float = 60) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def run_in(venv: Path, state: Path, rootfs: Path, cid: str, env: dict[str, str]) -> None:
    """A container through the venv's own ``execdriver`` command: foreground output, then
    a detached one whose monitor is the venv's C waiter."""
    r = cmd(venv, "--root", state, "run", "--rootfs", rootfs, "--", "/bin/sh", "-c",
            "echo hello from $(hostname); exit 7", env=env)
    assert (r.returncode, r.stdout.endswith("\n"), "hello from" in r.stdout) == (7, True, True), r
    assert cmd(venv, "--root", state, "run", "-d", "--name", cid, "--rootfs", rootfs, "--",
               "sleep", "30", env=env).returncode == 0
    try:
        waiter = next((venv / "lib").glob("python3*/site-packages/execdriver/kernel/execdriver-waiter"))
        assert monitor_of(state, cid) == str(waiter)
    finally:
        assert cmd(venv, "--root", state, "rm", "--force", cid, env=env).returncode == 0


def served_after_first_use(venv: Path, state: Path, rootfs: Path, env: dict[str, str]) -> None:
    """The first command starts a server (for this venv alone); the next one is served."""
    assert not server_status(venv, env)["running"]
    run_in(venv, state, rootfs, f"wh{os.getpid()}", env)
    wait_for(lambda: server_status(venv, env)["running"], "the server started on first use")
    served = int(server_status(venv, env)["served"])
    r = cmd(venv, "--root", state, "run", "--rootfs", rootfs, "--", "true", env=env)
    assert r.returncode == 0, r.stderr
    assert server_status(venv, env)["served"] == served + 1


def started_from_a_cgroup(venv: Path, env: dict[str, str]) -> None:
    """A server started on first use by a command in a cgroup of its own (as under
    conmon, or a systemd scope) leaves that cgroup, which can then be removed."""
    assert not server_status(venv, env)["running"]
    mount = "/sys/fs/cgroup/pids" if os.path.isdir("/sys/fs/cgroup/pids") else "/sys/fs/cgroup"
    starter = Path(mount, f"edtest-starter-{os.getpid()}")
    starter.mkdir()
    try:
        r = subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', starter,
                            venv / "bin" / "execdriver", "drivers"], capture_output=True,
                           text=True, env=env, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: server_status(venv, env)["running"], "the server started on first use")
        pid = server_status(venv, env)["pid"]
        own = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        assert [line for line in own if not line.endswith(":/")] == [], own
    finally:
        starter.rmdir()


def stop_server(venv: Path, env: dict[str, str]) -> None:
    if server_status(venv, env)["running"]:
        cmd(venv, "server", "stop", env=env)


def test_a_fresh_venv_runs_containers_with_the_c_helpers_moves_and_uninstalls(
        wheel: Path, tmp_path: Path, busybox_rootfs: Path) -> None:
    venv, moved, state = tmp_path / "venv", tmp_path / "moved", tmp_path / "state"
    sh(sys.executable, "-m", "venv", venv)
    # (the dependencies come from wherever this machine's pip is configured to look)
    sh(venv / "bin" / "pip", "install", "-q", wheel, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for name in ("execdriver", "execdriver-oci"):
        assert is_elf(venv / "bin" / name)
    env = user_env(EXECDRIVER_SERVER_IDLE="3")
    try:
        # (from the checkout: its execdriver/ directory must not shadow the installed package)
        drivers = json.loads(sh(venv / "bin" / "execdriver", "drivers", "--format", "json",
                                cwd=REPO, EXECDRIVER_SERVER="off"))
        native = next(d for d in drivers if d["name"] == "native")
        assert str(venv) in native["details"]["monitor"] and "C waiter" in native["details"]["monitor"]
        assert "spec: 1.1.0" in sh(venv / "bin" / "execdriver-oci", "--version")
        served_after_first_use(venv, state, busybox_rootfs, env)
        # idle for EXECDRIVER_SERVER_IDLE seconds, it is gone by itself
        wait_for(lambda: not server_status(venv, env)["running"], "the idle server to exit")

        shutil.move(venv, moved)
        served_after_first_use(moved, state, busybox_rootfs, env)
        stop_server(moved, env)
        started_from_a_cgroup(moved, env)
        stop_server(moved, env)
        # EXECDRIVER_SERVER=manual: no server started
        run_in(moved, state, busybox_rootfs, f"wm{os.getpid()}", {**env, "EXECDRIVER_SERVER": "manual"})
        assert not server_status(moved, env)["running"]
    finally:
        for v in (venv, moved):
            if v.exists():
                stop_server(v, env)

    sh(moved / "bin" / "python", "-m", "pip", "uninstall", "-y", "-q", "execdriver")
    left = [str(p) for p in moved.rglob("*execdriver*")]
    assert left == [], f"pip uninstall left {left}"


CROSS = {"cc": shutil.which("aarch64-linux-gnu-gcc"), "qemu": shutil.which("qemu-aarch64")}


@pytest.mark.skipif(not all(CROSS.values()),
                    reason="no aarch64 cross compiler or qemu-user (apt-get install "
                           "gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)")
def test_an_aarch64_wheel_cross_built_runs_its_helpers_under_qemu(sdist: Path,
                                                                   tmp_path: Path) -> None:
    """The same build hook makes the aarch64 wheel (CC and --plat-name), and its compiled
    helpers run on aarch64 (here emulated by qemu-user): the init passes an exit code
    through, the front execs Python."""
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
       tmp_path, "--config-settings=--build-option=--plat-name=linux_aarch64", sdist,
       CC=str(CROSS["cc"]))
    wheel = tmp_path / f"{NAME}-py3-none-linux_aarch64.whl"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "x")
    x = tmp_path / "x"
    init, front = x / "execdriver/kernel/execdriver-init", x / f"{NAME}.data/scripts/execdriver"
    for binary in (x / "execdriver/kernel/execdriver-waiter", init, front):
        assert binary.read_bytes()[18:20] == (183).to_bytes(2, "little"), binary  # EM_AARCH64
        binary.chmod(0o755)
    qemu = [str(CROSS["qemu"]), "-L", "/usr/aarch64-linux-gnu"]
    r = subprocess.run([*qemu, str(init), "--", "/bin/sh", "-c", "echo from-init; exit 5"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert (r.returncode, r.stdout) == (5, "from-init\n"), r.stderr
    r = subprocess.run([*qemu, str(front), "--version"], capture_output=True, text=True,
                       timeout=60, check=False, env={**os.environ, "EXECDRIVER_SERVER": "off",
                                                     "EXECDRIVER_PYTHON": sys.executable})
    assert (r.returncode, r.stdout) == (0, f"execdriver {execdriver.__version__}\n"), r.stderr
