"""The cases of issue 7, each with its anchor and target.

A latency case pairs two Sides and runs them interleaved (A B A B ...). The
density case starts N detached containers on each side. A case whose
prerequisites are missing becomes a "not available: <reason>" row.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .memory import smaps_rollup
from .sides import BenchError, Command, Side, Worker, WorkerRun, check_command, new_id
from .workspace import MEMORY_LIMIT, PIDS_LIMIT, Workspace, venv_bin

TRUE = ["/bin/true"]
DOCKER_IMAGE = "edbench/busybox:latest"
SLEEP = ["/bin/sleep", "100000"]


@dataclass
class Latency:
    name: str
    title: str
    anchor_title: str
    target: float | None              # ratio ours/anchor must be <= target (None: informational)
    build: Callable[[], tuple[Side, Side]]
    unavailable: Callable[[], str | None] = lambda: None


@dataclass
class Context:
    ws: Workspace
    worker: Worker
    state: dict[str, str] = field(default_factory=dict)

    server: subprocess.Popen[bytes] | None = None
    # a server on the default socket may have been started on first use by a case: it is
    # stopped at the end unless one ran before the bench
    server_before: bool = False

    def state_root(self, name: str) -> str:
        if name not in self.state:
            self.state[name] = str(self.ws.path("state", name))
        return self.state[name]

    def server_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for using a warm server on the installation's default socket
        (podman does not pass its environment on to the runtime, so no other socket
        would do): one already running is used as it is, else one is started (and
        stopped at the end)."""
        env = dict(os.environ if base is None else base)
        env.pop("EXECDRIVER_SERVER", None)
        env.pop("EXECDRIVER_SERVER_SOCKET", None)
        status = [venv_bin("execdriver"), "server", "status"]
        if self.server is None and subprocess.run(status, env=env, capture_output=True,
                                                  check=False).returncode:
            self.server = subprocess.Popen(
                [venv_bin("execdriver"), "server", "run"], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 30
            while subprocess.run(status, env=env, capture_output=True, check=False).returncode:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    err = self.server.stderr.read().decode() if self.server.stderr else ""
                    raise BenchError(f"execdriver server run: {err.strip() or 'did not start'}")
                time.sleep(0.05)
        return env

    engines: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _docker: Any = None
    _ctr: Any = None

    def __post_init__(self) -> None:
        self.server_before = self.default_server_running()

    def docker(self) -> Any:
        """A private dockerd (in its own netns) with execdriver-oci as runtime
        "execdriver", and the busybox image; started on first use, stopped at close."""
        if self._docker is None:
            from execdriver.testing import daemons
            d = self.engines.enter_context(daemons.private_dockerd(
                {"execdriver": venv_bin("execdriver-oci")}))
            d.import_rootfs(self.ws.rootfs, DOCKER_IMAGE)
            self._docker = d
        return self._docker

    def containerd(self) -> Any:
        if self._ctr is None:
            from execdriver.testing import daemons
            self._ctr = self.engines.enter_context(daemons.private_containerd())
        return self._ctr

    def default_server_running(self) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER_SERVER")}
        return subprocess.run([venv_bin("execdriver"), "server", "status"], env=env,
                              capture_output=True, check=False).returncode == 0

    def without_server_env(self) -> dict[str, str]:
        """A user's environment: the compiled front starts a server on first use."""
        return {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER_SERVER")}

    def close(self) -> None:
        self.engines.close()
        if self.server_before is False and self.server is None and self.default_server_running():
            env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER_SERVER")}
            subprocess.run([venv_bin("execdriver"), "server", "stop"], env=env,
                           capture_output=True, check=False)
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


# --- availability checks --------------------------------------------------------

def _runc_missing() -> str | None:
    return None if shutil.which("runc") else "runc not installed"


def _driver_missing(name: str) -> str | None:
    from execdriver import load_driver
    try:
        load_driver(name)
    except Exception as exc:  # noqa: BLE001 - the reason is the row
        return str(exc).splitlines()[0][:200]
    return None


# --- the cases ------------------------------------------------------------------

def runc_side(ctx: Context, args: list[str]) -> Side:
    bundle = ctx.ws.runc_bundle("true" if args == TRUE else "sleep", args)
    assert bundle is not None
    root = ctx.state_root("runc")
    return Command("runc run", lambda cid: ["runc", "--root", root, "run", "-b", str(bundle), cid],
                   tag="runc")


def _api_vs_runc(ctx: Context, name: str, driver: str, title: str,
                 target: float) -> Latency:
    """driver.run(true) in the bench's worker process against ``runc run``."""
    def build() -> tuple[Side, Side]:
        ours = WorkerRun(f"execdriver API ({driver})", ctx.worker, driver, ctx.state_root(name),
                         str(ctx.ws.rootfs), TRUE)
        return ours, runc_side(ctx, TRUE)
    return Latency(name, title, "runc run", target, build,
                   lambda: _runc_missing() or _driver_missing(driver))


def case_api(ctx: Context) -> Latency:
    return _api_vs_runc(ctx, "api", "native", "embedded API, native driver.run(true)", 0.5)


def case_cli(ctx: Context) -> list[Latency]:
    exe = venv_bin("execdriver")

    def unavailable() -> str | None:
        if not os.path.exists(exe):
            return f"{exe} missing"
        root = ctx.state_root("cli-check")
        return _runc_missing() or check_command(
            [exe, "run", "--root", root, "--driver", "native", "--rootfs", str(ctx.ws.rootfs),
             "--name", new_id("clicheck"), "--", "/bin/true"])

    def argv(root: str) -> Callable[[str], list[str]]:
        return lambda cid: [
            exe, "run", "--root", root, "--driver", "native", "--rootfs", str(ctx.ws.rootfs),
            "--memory", str(MEMORY_LIMIT), "--pids-limit", str(PIDS_LIMIT), "--name", cid,
            "--", *TRUE]

    def build() -> tuple[Side, Side]:
        # As a user types it, no server started by hand: the first command (a warm-up
        # run) starts one, the measured ones are served.
        ours = Command("execdriver run (CLI)", argv(ctx.state_root("cli")),
                       env=ctx.without_server_env(), tag="cli")
        return ours, runc_side(ctx, TRUE)

    def build_cold() -> tuple[Side, Side]:
        # Cold for real: no server, even if one runs on this machine (what the first
        # command pays, and every command with EXECDRIVER_SERVER=off).
        env = {**os.environ, "EXECDRIVER_SERVER": "off"}
        ours = Command("execdriver run (CLI, cold)", argv(ctx.state_root("cli-cold")), env=env,
                       tag="clic")
        return ours, runc_side(ctx, TRUE)

    def build_warm() -> tuple[Side, Side]:
        ours = Command("execdriver run (CLI, warm server)", argv(ctx.state_root("cli-server")),
                       env=ctx.server_env(), tag="clis")
        return ours, runc_side(ctx, TRUE)
    return [Latency("cli", "CLI: execdriver run --driver native true (no server started by "
                    "hand)", "runc run", 1.5, build, unavailable),
            Latency("cli-cold", "the same with EXECDRIVER_SERVER=off (a first command)",
                    "runc run", 1.5, build_cold, unavailable),
            Latency("cli-server", "CLI with `execdriver server` running", "runc run", 1.5,
                    build_warm, unavailable)]


def case_oci(ctx: Context) -> Latency:
    """What an engine asks of its runtime for one container: ``create``, ``start`` and
    ``delete --force``, three new processes, through the installed execdriver-oci (no
    server started by hand: the first served verb of a warm-up run starts one) against
    runc, on one bundle of /bin/true; one ``sh -c`` on each side runs the three."""
    exe = venv_bin("execdriver-oci")

    def unavailable() -> str | None:
        return _runc_missing() or (None if os.path.exists(exe) else f"{exe} missing")

    def argv(runtime: str, root: str) -> Callable[[str], list[str]]:
        bundle = ctx.ws.runc_bundle("true", TRUE)
        return lambda cid: ["sh", "-c", f'set -e; R="{runtime} --root {root}"; '
                            f'$R create --bundle {bundle} {cid}; $R start {cid}; '
                            f'$R delete --force {cid}']

    def build() -> tuple[Side, Side]:
        ours = Command("execdriver-oci create+start+delete", argv(exe, ctx.state_root("oci")),
                       env=ctx.without_server_env(), tag="oci")
        return ours, Command("runc create+start+delete", argv("runc", ctx.state_root("runc")),
                             tag="ocir")
    return Latency("oci", "execdriver-oci create + start + delete (no server started by hand)",
                   "runc create + start + delete", 2.0, build, unavailable)


def case_chroot(ctx: Context) -> Latency:
    # (issue 13's target: a chroot does far less than a container of runc's)
    return _api_vs_runc(ctx, "chroot", "chroot", "chroot driver.run(true) (API)", 0.3)


def case_nspawn(ctx: Context) -> Latency:
    """The nspawn driver against systemd-nspawn run directly on the same rootfs."""
    def unavailable() -> str | None:
        if not shutil.which("systemd-nspawn"):
            return "systemd-nspawn not installed"
        return _driver_missing("nspawn")

    def build() -> tuple[Side, Side]:
        ours = WorkerRun("execdriver API (nspawn)", ctx.worker, "nspawn",
                         ctx.state_root("nspawn"), str(ctx.ws.rootfs), TRUE)
        anchor = Command("systemd-nspawn", lambda cid: [
            "systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", str(ctx.ws.rootfs),
            *TRUE], env={**os.environ, "SYSTEMD_NSPAWN_LOCK": "0"}, tag="nspx")
        return ours, anchor
    return Latency("nspawn", "nspawn driver.run(true) (API)", "systemd-nspawn -D ROOTFS", 1.5,
                   build, unavailable)


def case_qemu(ctx: Context) -> Latency:
    """The qemu driver (a micro-VM per container) against ``runc run``: informational, a VM
    boot is not a container start (no target)."""
    def unavailable() -> str | None:
        return _runc_missing() or _driver_missing("qemu")

    def build() -> tuple[Side, Side]:
        ours = WorkerRun("execdriver API (qemu)", ctx.worker, "qemu", ctx.state_root("qemu"),
                         str(ctx.ws.rootfs), TRUE)
        return ours, runc_side(ctx, TRUE)
    return Latency("qemu", "qemu driver.run(true) (API, a micro-VM)", "runc run", None, build,
                   unavailable)


def _lxc_config(ctx: Context, cid: str, lxcpath: str) -> str:
    """The lxc driver's own translation of the same spec, as an lxc-execute config file."""
    from execdriver import validate_spec
    from execdriver_lxc import host
    from execdriver_lxc.translate import seccomp_profile, spec_to_config

    from .workspace import spec_dict
    spec = validate_spec(spec_dict(str(ctx.ws.rootfs), TRUE))
    cdir = Path(lxcpath) / cid
    cdir.mkdir(parents=True, exist_ok=True)
    items = spec_to_config(spec, cid, lxcpath, host.facts().cgroup_version,
                           log_file=str(cdir / "lxc.log"), mount_binary=host.mount_binary())
    profile = seccomp_profile(spec)
    if profile is not None:
        (cdir / "seccomp").write_text(profile)
    conf = cdir / "bench.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in items if k != "lxc.init.cmd"))
    return str(conf)


def case_lxc(ctx: Context) -> Latency:
    lxcpath = str(ctx.ws.path("lxc-execute"))

    def unavailable() -> str | None:
        if not shutil.which("lxc-execute"):
            return "lxc-execute not installed"
        why = _driver_missing("lxc")
        if why:
            return why
        try:
            cid = new_id("lxccheck")
            conf = _lxc_config(ctx, cid, lxcpath)
        except Exception as exc:  # noqa: BLE001
            return f"lxc config: {exc}"[:200]
        why = check_command(["lxc-execute", "-P", lxcpath, "-n", cid, "-f", conf, "--", *TRUE])
        shutil.rmtree(Path(lxcpath) / cid, ignore_errors=True)
        return why

    def build() -> tuple[Side, Side]:
        ours = WorkerRun("execdriver API (lxc)", ctx.worker, "lxc", ctx.state_root("lxc"),
                         str(ctx.ws.rootfs), TRUE)
        confs: dict[str, str] = {}

        def prepare(cid: str) -> None:
            confs[cid] = _lxc_config(ctx, cid, lxcpath)

        def after(cid: str) -> None:
            shutil.rmtree(Path(lxcpath) / cid, ignore_errors=True)
        anchor = Command("lxc-execute", lambda cid: [
            "lxc-execute", "-P", lxcpath, "-n", cid, "-f", confs[cid], "--", *TRUE],
            prepare=prepare, after=after, tag="lxcx")
        return ours, anchor
    return Latency("lxc", "lxc driver.run(true) (API)", "lxc-execute", 1.2, build, unavailable)


def case_podman(ctx: Context) -> list[Latency]:
    oci = venv_bin("execdriver-oci")
    flags, env = ctx.ws.podman_env()

    def argv(runtime: str) -> Callable[[str], list[str]]:
        return lambda cid: ["podman", *flags, "run", "--rm", "--runtime", runtime,
                            "--name", cid, "--network", "none", "--memory", "64m",
                            "--pids-limit", str(PIDS_LIMIT), "--rootfs", str(ctx.ws.rootfs),
                            *TRUE]

    def unavailable() -> str | None:
        if not shutil.which("podman"):
            return "podman not installed"
        if not os.path.exists(oci):
            return f"{oci} missing"
        why = check_command([oci, "--version"]) or check_command([oci, "--help"])
        if why and "--version" not in why:
            return why
        return _runc_missing() or check_command(argv("runc")(new_id("podcheck")), env=env) \
            or check_command(argv(oci)(new_id("podcheck")), env=env)

    def build() -> tuple[Side, Side]:
        # podman hands the runtime an environment of its own (EXECDRIVER_SERVER=off would
        # not reach it): as for a user, the compiled execdriver-oci starts a server on
        # first use, and create has it translate config.json
        return (Command("podman + execdriver-oci", argv(oci), env=_user_env(env), tag="pod"),
                Command("podman + runc", argv("runc"), env=env, tag="pod"))

    def build_warm() -> tuple[Side, Side]:
        return (Command("podman + execdriver-oci (warm server)", argv(oci),
                        env=ctx.server_env(env), tag="pods"),
                Command("podman + runc", argv("runc"), env=env, tag="pod"))
    return [Latency("podman", "podman run --rm through execdriver-oci (no server started by hand)",
                    "podman with runc", 1.2,
                    build, unavailable),
            Latency("podman-server", "podman run --rm, `execdriver server` running",
                    "podman with runc", 1.2, build_warm, unavailable)]


def _engine_unavailable(missing: Callable[[], str | None],
                        start: Callable[[], Any]) -> str | None:
    why = missing()
    if why:
        return why
    try:
        start()
    except (RuntimeError, OSError) as exc:
        return str(exc).splitlines()[0][:200]
    return None


def _user_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """As a user would run it: no EXECDRIVER_SERVER* settings (the compiled
    execdriver-oci starts its server on first use)."""
    return {k: v for k, v in (base or os.environ).items() if not k.startswith("EXECDRIVER_SERVER")}


def case_docker(ctx: Context) -> Latency:
    """docker run --rm through execdriver-oci against the same with runc, one private
    dockerd."""
    from execdriver.testing import daemons

    def side(runtime: str) -> Command:
        d = ctx.docker()
        return Command(f"docker run --rm --runtime {runtime}",
                       lambda cid: d.argv("run", "--rm", "--runtime", runtime, "--name", cid,
                                          DOCKER_IMAGE, *TRUE),
                       env=_user_env(d.env), tag="dk")
    return Latency("docker", "docker run --rm through execdriver-oci", "docker with runc", 1.2,
                   lambda: (side("execdriver"), side("runc")),
                   lambda: _engine_unavailable(daemons.docker_missing, ctx.docker))


def case_containerd(ctx: Context) -> Latency:
    """ctr run --rm (containerd's runc v2 shim) with execdriver-oci as its runc binary
    against runc itself, on a busybox rootfs (no image, no snapshotter)."""
    from execdriver.testing import daemons

    def side(binary: str, label: str) -> Command:
        c = ctx.containerd()
        root = ctx.state_root(f"ctr-{label}")
        return Command(f"ctr run --rm ({label})",
                       lambda cid: c.argv("run", "--rm", "--rootfs", "--runc-binary", binary,
                                          "--runc-root", root, str(ctx.ws.rootfs), cid, *TRUE),
                       env=_user_env(), tag="ctr")
    return Latency("containerd", "ctr run --rm through execdriver-oci", "ctr with runc", 1.2,
                   lambda: (side(venv_bin("execdriver-oci"), "execdriver-oci"),
                            side(shutil.which("runc") or "runc", "runc")),
                   lambda: _engine_unavailable(daemons.containerd_missing, ctx.containerd))


def latency_cases(ctx: Context) -> list[Latency]:
    return [case_api(ctx), *case_cli(ctx), case_oci(ctx), *case_podman(ctx), case_docker(ctx),
            case_containerd(ctx), case_lxc(ctx), case_chroot(ctx), case_nspawn(ctx),
            case_qemu(ctx)]



# --- throughput from threads ------------------------------------------------------------

THREADS = 4
THREADS_TARGET = 1.5        # our runs/s must be >= this many times runc's


def _runc_threads(ctx: Context, threads: int, n: int) -> float:
    """``n`` ``runc run`` of /bin/true from ``threads`` threads at once: runs per second."""
    from concurrent.futures import ThreadPoolExecutor
    bundle = ctx.ws.runc_bundle("true", TRUE)
    root = ctx.state_root("runc-threads")

    def one(cid: str) -> int:
        return subprocess.run(["runc", "--root", root, "run", "-b", str(bundle), cid],
                              check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        codes = list(pool.map(one, [new_id("runct") for _ in range(n)]))
        dt = time.perf_counter() - t0
    if any(codes):
        raise BenchError(f"runc run from {threads} threads: {sum(1 for c in codes if c)} failed")
    return n / dt


def threads(ctx: Context, n: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """driver.run(true) from 4 threads of one process against 4 threads spawning runc run,
    interleaved rounds; runs per second, ratio ours/runc (target >= 1.5)."""
    why = _runc_missing() or _driver_missing("native")
    row: dict[str, Any] = {"threads": THREADS, "n": n, "target": THREADS_TARGET}
    if why:
        return {**row, "status": "not available", "reason": why}
    ours: list[float] = []
    anchor: list[float] = []
    for r in range(rounds):
        got = ctx.worker.call(op="threads", driver="native", state_root=ctx.state_root("threads"),
                              rootfs=str(ctx.ws.rootfs), args=TRUE, n=n, threads=THREADS,
                              prefix=new_id("thr"))
        if got.get("failed"):
            raise BenchError(f"driver.run from {THREADS} threads: {got['failed']} failed")
        ours.append(float(got["runs_per_second"]))
        anchor.append(_runc_threads(ctx, THREADS, n))
        log(f"threads round {r + 1}/{rounds}: ours {ours[-1]:.1f} runs/s, runc {anchor[-1]:.1f}")
    ratio = statistics.median(ours) / statistics.median(anchor)
    return {**row, "status": "ok", "ours": ours, "anchor": anchor, "ratio": ratio,
            "met": ratio >= THREADS_TARGET}


# --- density --------------------------------------------------------------------------

def _runc_density(ctx: Context, n: int) -> dict[str, Any]:
    bundle = ctx.ws.runc_bundle("sleep", SLEEP)
    root = ctx.state_root("runc-density")
    ids = [new_id("runcd") for _ in range(n)]
    out: dict[str, Any] = {}
    started: list[str] = []

    def runc(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["runc", "--root", root, *args], check=False,
                              stdin=subprocess.DEVNULL, capture_output=True)
    try:
        t0 = time.perf_counter()
        for cid in ids:
            # The container inherits runc's stdio: no pipe, or reading it would never end.
            proc = subprocess.run(["runc", "--root", root, "run", "-d", "-b", str(bundle), cid],
                                  check=False,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise BenchError(f"runc run -d {cid}: exit {proc.returncode}")
            started.append(cid)
        out["start_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        listed = runc("list", "--format", "json")
        out["list_seconds"] = time.perf_counter() - t0
        out["listed_running"] = sum(1 for c in json.loads(listed.stdout or b"[]") or []
                                    if c.get("status") == "running")
        t0 = time.perf_counter()
        for cid in ids:
            runc("events", "--stats", cid)
        out["stats_seconds"] = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        for cid in started:
            runc("delete", "--force", cid)
        out["terminate_seconds"] = time.perf_counter() - t0
    return out


def _cli_monitor_memory(ctx: Context, n: int) -> dict[str, Any]:
    """Monitors of containers started by ``execdriver run -d``, measured after the CLI exited."""
    exe = venv_bin("execdriver")
    root = ctx.state_root("cli-density")
    ids = [new_id("clid") for _ in range(n)]
    mem: list[dict[str, Any]] = []
    started = []
    try:
        for cid in ids:
            # Files, not pipes: a detached container may keep the CLI's stdio open.
            errfile = ctx.ws.path("logs") / f"{cid}.err"
            with open(errfile, "wb") as err:
                proc = subprocess.run([exe, "run", "-d", "--root", root, "--driver", "native",
                                       "--rootfs", str(ctx.ws.rootfs), "--memory", str(MEMORY_LIMIT),
                                       "--pids-limit", str(PIDS_LIMIT), "--name", cid, "--", *SLEEP],
                                      check=False,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            if proc.returncode != 0:
                raise BenchError(f"execdriver run -d: {errfile.read_text().strip()[-200:]}")
            started.append(cid)
        time.sleep(0.2)
        for cid in ids:
            st = json.loads((Path(root) / cid / "state.json").read_text())
            pid = st.get("monitor_pid")
            if pid:
                mem.append(smaps_rollup(pid))
        t0 = time.perf_counter()
        listed = subprocess.run([exe, "list", "--root", root], check=False, capture_output=True,
                                text=True)
        cli_list = time.perf_counter() - t0
    finally:
        for cid in started:
            subprocess.run([exe, "terminate", "--force", "--root", root, cid], check=False,
                           capture_output=True)
    return {"memory": mem, "cli_list_seconds": cli_list, "cli_list_ok": listed.returncode == 0}


def density(ctx: Context, n: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """N detached sleep containers: start, list, stats, memory, terminate; interleaved with runc."""
    why = _runc_missing() or _driver_missing("native")
    if why:
        return {"status": "skipped", "reason": why, "n": n}
    ours: list[dict[str, Any]] = []
    anchor: list[dict[str, Any]] = []
    cli_exe = venv_bin("execdriver") if os.path.exists(venv_bin("execdriver")) else None
    for r in range(rounds):
        log(f"density round {r + 1}/{rounds}: execdriver API, {n} containers")
        ours.append(ctx.worker.call(op="density", driver="native", state_root=ctx.state_root("density"),
                                    rootfs=str(ctx.ws.rootfs), args=SLEEP, n=n,
                                    prefix=new_id("dens"), cli=cli_exe))
        log(f"density round {r + 1}/{rounds}: runc, {n} containers")
        anchor.append(_runc_density(ctx, n))
    cli: dict[str, Any] = {}
    if os.path.exists(venv_bin("execdriver")):
        log("density: monitors of CLI-started containers")
        try:
            cli = _cli_monitor_memory(ctx, min(n, 10))
        except BenchError as exc:
            cli = {"error": str(exc)}
    return summarize_density(n, ours, anchor, cli)


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_density(n: int, ours: list[dict[str, Any]], anchor: list[dict[str, Any]],
                      cli: dict[str, Any]) -> dict[str, Any]:
    def col(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None]

    mem = [m for r in ours for m in r.get("memory", []) if m]
    uss = sorted(m["Uss"] / 1024 for m in mem)
    pss = sorted(m["Pss"] / 1024 for m in mem)
    cli_mem = [m for m in cli.get("memory", []) if m]
    out = {
        "status": "ok", "n": n, "rounds": len(ours),
        "ours": {k: col(ours, k) for k in ("start_seconds", "list_seconds", "stats_seconds",
                                           "terminate_seconds", "cli_list_seconds",
                                           "cli_stats_seconds")},
        "cli_ok": all(r.get("cli_list_ok", True) and r.get("cli_stats_ok", True) for r in ours),
        "anchor": {k: col(anchor, k) for k in ("start_seconds", "list_seconds", "stats_seconds",
                                               "terminate_seconds")},
        "listed_running": [r.get("listed_running") for r in ours],
        "anchor_listed_running": [r.get("listed_running") for r in anchor],
        "terminate_errors": sum(r.get("terminate_errors", 0) for r in ours),
        "monitor_uss_mib": {"median": _med(uss), "min": uss[0] if uss else None,
                            "max": uss[-1] if uss else None, "samples": len(uss)},
        "monitor_pss_mib": {"median": _med(pss), "min": pss[0] if pss else None,
                            "max": pss[-1] if pss else None},
        "worker_rss_mib": (ours[-1].get("worker_memory", {}).get("Rss", 0) / 1024) if ours else None,
        "cli": {
            "monitor_uss_mib": _med([m["Uss"] / 1024 for m in cli_mem]),
            "monitor_pss_mib": _med([m["Pss"] / 1024 for m in cli_mem]),
            "samples": len(cli_mem),
            "list_seconds": cli.get("cli_list_seconds"),
            "error": cli.get("error"),
        },
    }
    return out
