"""The warm server (``execdriver server``): commands run through it exactly as in a cold
process -- exit codes, stdio, cwd, environment, signals, a killed client -- and every
client it must not serve runs the command itself (root)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli_chroot import Cli, cli_env

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def _proc_env(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def marked(marker: str) -> list[int]:
    """pids whose environment holds MARK=<marker> (our containers only)."""
    needle = f"MARK={marker}".encode()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and needle in _proc_env(int(p))]


def wait_for(cond: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class Server:
    """``execdriver server run`` on a private socket, for one test."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.socket = str(tmp / "server.sock")
        self.env = cli_env(tmp)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "execdriver", "server", "run", "--socket", self.socket, *extra],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None,
                        timeout=60)
        assert self.proc.poll() is None, self.proc.communicate()

    def client_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, "EXECDRIVER_SERVER_SOCKET": self.socket, **extra}

    def status(self) -> dict[str, Any]:
        r = subprocess.run([sys.executable, "-m", "execdriver", "server", "status", "--socket",
                            self.socket, "--format", "json"], capture_output=True, text=True,
                           env=self.env, check=False)
        return json.loads(r.stdout)

    def served(self) -> int:
        return int(self.status()["served"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def send_request(sock: socket.socket, prog: str, argv: list[str],
                 env: dict[str, str]) -> dict[str, Any]:
    """Send a request as warm.py does (stdio on /dev/null, cwd /) on a connected socket,
    bypassing the client's own classification; the server's first answer."""
    from execdriver.cli import warm
    req = {"v": warm.PROTOCOL, "key": warm.install_key(), "prog": prog, "argv": argv,
           "env": env, "umask": 0o22, "fds": [0, 1, 2], "ignored": []}
    sock.settimeout(30)
    sock.send(json.dumps(req).encode())
    return dict(json.loads(sock.recv(65536) or b'{"eof": true}'))


def send_go(sock: socket.socket) -> None:
    """The client's "go" after "ok", with its stdio (/dev/null) and cwd (/)."""
    null = os.open(os.devnull, os.O_RDWR)
    cwd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        socket.send_fds(sock, [b'{"go": 1}'], [null, null, null, cwd])
    finally:
        os.close(null)
        os.close(cwd)


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    return sock


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


class CompiledCli(Cli):
    """The same commands through the compiled client (client.c), as setup.sh installs it."""

    def argv(self, *args: Any) -> list[str]:
        return [compiled_client("execdriver"), "--root", str(self.root), *map(str, args)]


def compiled_client(name: str) -> str:
    """This environment's ``name`` command when the package build made it the compiled
    client (skip when it is a Python script: no C compiler at build time)."""
    path = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), name)
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.skip(f"{path} is not the compiled client (built without a C compiler)")
    return path


@pytest.fixture(params=["python", "compiled"])
def cli(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> Any:
    cls = CompiledCli if request.param == "compiled" else Cli
    c = cls(tmp_path / "state", server.client_env())
    yield c
    if c.root.exists():
        off = Cli(c.root, {**c.env, "EXECDRIVER_SERVER": "off"})
        for cid in os.listdir(c.root):
            if not cid.startswith("."):
                off("rm", "--force", cid)


# --- served commands behave as cold ones --------------------------------------------------

def test_run_is_served_with_exit_code_stdio_cwd_and_environment(
        server: Server, cli: Cli, busybox_rootfs: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(busybox_rootfs, work / "rootfs")
    before = server.served()
    # --rootfs relative to the client's cwd, the state root from the client's environment
    env = {**cli.env, "EXECDRIVER_ROOT": str(cli.root)}
    argv = [a for a in cli.argv("run", "--rootfs", "rootfs", "--", "/bin/sh", "-c",
                                "echo out; echo err >&2; cat; exit 3") if a != str(cli.root)]
    argv.remove("--root")
    r = subprocess.run(argv, cwd=work, env=env, input="from stdin\n", capture_output=True,
                       text=True, timeout=60, check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\nfrom stdin\n", "err\n")
    assert server.served() == before + 1
    assert cli.ok("list", "-q") == ""


def test_the_container_inherits_the_clients_ulimits_and_oom_score_adj(
        server: Server, cli: Cli, busybox_rootfs: Path) -> None:
    def lower() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (321, 512))
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("345")
    before = server.served()
    r = subprocess.run(cli.argv("run", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
                                "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj"),
                       env=cli.env, capture_output=True, text=True, timeout=60,
                       preexec_fn=lower, check=False)
    assert (r.returncode, r.stdout) == (0, "321\n512\n345\n"), r.stderr
    assert server.served() == before + 1


def test_detached_run_exec_list_and_rm_are_served(server: Server, cli: Cli,
                                                 busybox_rootfs: Path) -> None:
    before = server.served()
    cid = cli.ok("run", "-d", "--name", "srv1", "--rootfs", busybox_rootfs, "--",
                 "/bin/sleep", "1000").strip()
    assert cid == "srv1"
    assert cli.ok("exec", "srv1", "--", "/bin/echo", "inside") == "inside\n"
    assert [c["id"] for c in cli.json("list")] == ["srv1"]
    r = cli("rm", "srv1")
    assert r.returncode == 125 and "running" in r.stderr and len(r.stderr.splitlines()) == 1
    assert cli.ok("rm", "--force", "srv1") == "srv1\n"
    assert server.served() == before + 5
    assert cli.ok("list", "-q") == ""


def test_errors_are_one_line_and_125(server: Server, cli: Cli) -> None:
    before = server.served()
    r = cli("run", "--rootfs", "/nonexistent", "--", "/bin/true")
    assert r.returncode == 125
    assert r.stderr.startswith("execdriver: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert cli("--version").stdout.startswith("execdriver ")
    assert server.served() == before + 2


def test_a_killed_client_is_a_killed_execdriver(server: Server, cli: Cli,
                                                busybox_rootfs: Path) -> None:
    marker = f"srvkill{os.getpid()}"
    proc = subprocess.Popen(cli.argv("run", "--name", "k1", "-e", f"MARK={marker}", "--rootfs",
                                     busybox_rootfs, "--", "/bin/sleep", "1000"),
                            env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: marked(marker), timeout=30), "the container did not start"
        proc.kill()
        proc.wait()
        assert wait_for(lambda: not marked(marker), timeout=5), "container outlived its client"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli.ok("rm", "--force", "k1") == "k1\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["TERM", "INT", "HUP"])
def test_signals_to_the_client_reach_the_container(server: Server, cli: Cli, busybox_rootfs: Path,
                                                   sig: signal.Signals) -> None:
    name = sig.name[3:]
    script = f"trap 'exit 7' {name}; echo ready; while :; do sleep 0.1; done"
    # SIGINT ignored, as a shell starts background jobs: Ctrl-C must still work (as cold).
    proc = subprocess.Popen(cli.argv("run", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
                                     script),
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_worker_killed_by_a_signal_kills_its_client_the_same_way(
        server: Server, cli: Cli, busybox_rootfs: Path) -> None:
    """SIGALRM is not proxied to the container: it ends a cold execdriver, and a served one
    the same way, and the client dies of it too."""
    proc = subprocess.Popen(cli.argv("run", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c",
                                     "echo ready; exec sleep 1000"),
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGALRM)
        assert proc.wait(timeout=30) == -signal.SIGALRM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- clients the server must not serve run the command themselves -----------------------

def test_client_in_another_network_namespace_runs_locally(server: Server, cli: Cli,
                                                          busybox_rootfs: Path) -> None:
    before = server.served()
    r = subprocess.run(["unshare", "--net", *cli.argv("run", "--network", "host", "--rootfs",
                                                     busybox_rootfs, "--", "/bin/cat",
                                                     "/proc/net/dev")],
                       env={**cli.env, "EXECDRIVER_DEBUG": "1"}, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "other namespaces" in r.stderr
    # host network = the client's own namespace, which has only lo
    assert [ln.split(":")[0].strip() for ln in r.stdout.splitlines()[2:]] == ["lo"]
    assert server.served() == before


@pytest.mark.parametrize("wrap", [["capsh", "--drop=cap_sys_admin", "--"],
                                  ["setpriv", "--no-new-privs"]], ids=["fewer-caps", "nnp"])
def test_a_client_with_other_privileges_runs_locally(server: Server, cli: Cli,
                                                     wrap: list[str]) -> None:
    import shutil
    if shutil.which(wrap[0]) is None:
        pytest.skip(f"{wrap[0]} not installed")
    before = server.served()
    argv = cli.argv("list", "-q")
    cmd = [*wrap, "-c", " ".join(argv)] if wrap[0] == "capsh" else [*wrap, *argv]
    r = subprocess.run(cmd, env={**cli.env, "EXECDRIVER_DEBUG": "1"}, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "other privileges" in r.stderr
    assert server.served() == before


def test_execdriver_server_off_runs_locally(server: Server, cli: Cli) -> None:
    before = server.served()
    off = Cli(cli.root, {**cli.env, "EXECDRIVER_SERVER": "off"})
    assert off.ok("list", "-q") == ""
    assert server.served() == before


def test_changed_code_makes_the_server_step_aside(server: Server, cli: Cli) -> None:
    module = REPO / "execdriver" / "cli" / "output.py"
    st = os.stat(module)
    try:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        r = subprocess.run(cli.argv("list", "-q"), env={**cli.env, "EXECDRIVER_DEBUG": "1"},
                           capture_output=True, text=True, timeout=60, check=False)
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert r.returncode == 0 and "stale" in r.stderr, r.stderr
    assert server.proc.wait(timeout=30) == 0, "a stale server must exit"
    assert not os.path.exists(server.socket)


@pytest.mark.parametrize("client", ["python", "compiled"])
def test_oci_create_is_served_only_with_a_forker_but_state_is(server: Server, tmp_path: Path,
                                                  client: str) -> None:
    env = server.client_env()
    front = ([compiled_client("execdriver-oci")] if client == "compiled"
             else [sys.executable, "-m", "execdriver.cli.oci"])

    def oci(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*front, "--root", str(tmp_path / "oci"), *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    before = server.served()
    r = oci("state", "nosuch")
    assert r.returncode == 1 and "nosuch" in r.stderr
    assert server.served() == before + 1
    r = oci("create", "--bundle", str(tmp_path / "nobundle"), "c1")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "nobundle" in r.stderr
    # The Python client runs create itself (conmon reaps its init); the compiled one has a
    # worker run it, forking the container itself (see the subreaper test below).
    assert server.served() == before + (2 if client == "compiled" else 1)


def oci_bundle(tmp_path: Path, rootfs: Path, args: list[str], **linux: Any) -> Path:
    from execdriver.oci.queries import default_config
    config = default_config()
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["process"].update(args=args, terminal=False)
    config["linux"].update(linux)
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


CREATE_IMPORTS = """
import json, sys
sys.argv = ["execdriver-oci", *sys.argv[1:]]
from execdriver.cli.oci import main
code = main()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "stevedore"))
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("client", ["python", "compiled-cold"])
def test_oci_create_has_the_server_translate_config_json_and_launches_itself(
        server: Server, tmp_path: Path, busybox_rootfs: Path, client: str) -> None:
    """A create the client runs itself (the Python client; the compiled one when the
    worker may not fork through it: --preserve-fds) stays in the caller (its init is the
    caller's child), but config.json is translated by the server: the caller imports no
    pydantic, and the container runs."""
    env = server.client_env()
    front = ([compiled_client("execdriver-oci")] if client == "compiled-cold"
             else [sys.executable, "-m", "execdriver.cli.oci"])
    extra = ["--preserve-fds", "0"] if client == "compiled-cold" else []
    root = str(tmp_path / "oci")
    bundle = oci_bundle(tmp_path, busybox_rootfs, ["sleep", "30"])
    before = server.status()["prepared"]
    # (files, not pipes: a created container keeps the stdio it was given)
    with open(tmp_path / "err", "w+") as err:
        code = subprocess.run([*front, "--root", root, "create", *extra, "--bundle",
                               str(bundle), "p1"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=60, check=False).returncode
    assert code == 0, (tmp_path / "err").read_text()
    assert server.status()["prepared"] == before + 1
    oci = [sys.executable, "-m", "execdriver.cli.oci", "--root", root]
    subprocess.run([*oci, "start", "p1"], env=env, check=True, timeout=60)
    state = json.loads(subprocess.run([*oci, "state", "p1"], env=env, capture_output=True,
                                      text=True, check=True, timeout=60).stdout)
    assert state["status"] == "running"
    subprocess.run([*oci, "delete", "--force", "p1"], env=env, check=True, timeout=60)
    # the same create in a process that reports what it imported
    with open(tmp_path / "out", "w+") as out:
        subprocess.run([sys.executable, "-c", CREATE_IMPORTS, "--root", root, "create",
                        "--bundle", str(bundle), "p2"], env=env, stdin=subprocess.DEVNULL,
                       stdout=out, stderr=out, timeout=60, check=False)
    try:
        text = (tmp_path / "out").read_text()
        result = json.loads(text.strip().splitlines()[-1])
        assert result == {"code": 0, "heavy": []}, text
    finally:
        subprocess.run([*oci, "delete", "--force", "p2"], env=env, check=False, timeout=60)


SUBREAPER = """
import ctypes, json, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)         # PR_SET_CHILD_SUBREAPER, as conmon
oci = sys.argv[1:3]
root, bundle, err_path = sys.argv[3], sys.argv[4], sys.argv[5]
with open(err_path, "w") as err:
    code = subprocess.run([*oci, "--root", root, "create", "--bundle", bundle, "s1"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=err).returncode
state = json.loads(subprocess.run([*oci, "--root", root, "state", "s1"],
                                  capture_output=True, check=True).stdout)
pid = state["pid"]
ppid = int([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("PPid:")][0])
subprocess.run([*oci, "--root", root, "start", "s1"], check=True)
_, status = os.waitpid(pid, 0)                  # the init is ours to reap, as conmon's
subprocess.run([*oci, "--root", root, "delete", "--force", "s1"], check=True)
print(json.dumps({"code": code, "ppid": ppid, "me": os.getpid(),
                  "exit": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.parametrize("served", [True, False], ids=["forker", "cold"])
def test_a_created_init_descends_from_the_caller_and_is_reaped_by_it(
        server: Server, tmp_path: Path, busybox_rootfs: Path, served: bool) -> None:
    """runc's process model, which conmon and containerd-shim rely on: the init of a
    created container is a child of the caller (a child subreaper) once create returns.
    Served, the compiled client stays the forker of a worker's create (its Python forks
    stage-1), so the init still descends from the caller, not from the server."""
    client = compiled_client("execdriver-oci")
    env = server.client_env(**({} if served else {"EXECDRIVER_SERVER": "off"}))
    bundle = oci_bundle(tmp_path, busybox_rootfs, ["sh", "-c", "exit 7"])
    before = server.served()
    err = tmp_path / "err"
    out = subprocess.run([sys.executable, "-c", SUBREAPER, client, "--log-format=text",
                          str(tmp_path / "oci"), str(bundle), str(err)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr + (err.read_text() if err.exists() else "")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["code"] == 0, err.read_text()
    assert got["ppid"] == got["me"]
    assert got["exit"] == 7
    # create (a worker, with the client as its forker), state, start and delete went to
    # the server, or (off) none of them
    assert server.served() - before == (4 if served else 0)
    assert not (tmp_path / "oci" / "s1").exists()


def test_a_config_the_server_cannot_translate_is_reported_by_the_caller(
        server: Server, tmp_path: Path, busybox_rootfs: Path) -> None:
    """The server gives up on a bad config.json; the caller translates it itself and
    prints the same one-line error as without a server."""
    bundle = oci_bundle(tmp_path, busybox_rootfs, ["true"], rootfsPropagation="rbogus")
    outs = []
    for env in (server.client_env(), {**server.client_env(), "EXECDRIVER_SERVER": "off"}):
        r = subprocess.run([sys.executable, "-m", "execdriver.cli.oci", "--root",
                            str(tmp_path / "oci"), "create", "--bundle", str(bundle), "b1"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        outs.append(r.stderr.split("msg=", 1)[1])
    assert outs[0] == outs[1] and "rootfsPropagation" in outs[0]
    assert not (tmp_path / "oci" / "b1").exists()


# execdriver-oci abbreviates no option: with "--cri" as "--criu", "state" was its value and
# "create" the verb, which the client (and the server) took for a served "state".
OCI_TRICKS = [["--cri", "state", "create"], ["--roo", "state", "create"],
              ["--criu=state", "create"], ["--root", "state", "create"],
              ["--", "state", "create"], ["--log-f", "json", "run"]]


@pytest.mark.parametrize("client", ["python", "compiled"])
@pytest.mark.parametrize("trick", OCI_TRICKS, ids=[" ".join(t) for t in OCI_TRICKS])
def test_oci_create_behind_option_tricks_is_never_served(server: Server, tmp_path: Path,
                                                         client: str, trick: list[str]) -> None:
    front = ([compiled_client("execdriver-oci")] if client == "compiled"
             else [sys.executable, "-m", "execdriver.cli.oci"])
    before = server.served()
    r = subprocess.run([*front, *trick, "--bundle", str(tmp_path / "nobundle"), "c1"],
                       env={**server.client_env(), "EXECDRIVER_OCI_ROOT": str(tmp_path / "oci")},
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert r.returncode == 1 and r.stderr.strip(), r.stderr
    # Whatever ran it (the client itself, or, for the compiled client and a command line
    # whose verb is create, a worker with the client as its forker), it was no `state`.
    assert "does not exist" not in r.stderr, r.stderr
    assert server.served() - before <= (1 if client == "compiled" else 0)
    assert not (tmp_path / "oci" / "c1").exists()


@pytest.mark.parametrize("prog,argv", [
    ("execdriver-oci", ["--cri", "state", "create", "c1"]),
    ("execdriver-oci", ["--root", "/x", "run", "c1"]),
    ("execdriver-oci", ["exec", "c1", "/bin/true"]),
    ("execdriver", ["server", "status"]),
    ("execdriver", ["--ro", "/x", "server", "run"]),
], ids=["oci-abbrev", "oci-run", "oci-exec", "server-verb", "server-abbrev"])
def test_the_server_itself_refuses_verbs_it_must_not_serve(server: Server, prog: str,
                                                            argv: list[str]) -> None:
    """A client that does not classify (or classifies wrongly) still gets "fallback"."""
    before = server.served()
    with connect(server.socket) as sock:
        assert send_request(sock, prog, argv, server.client_env()) == {"fallback": "verb"}
    assert server.served() == before


def test_a_client_that_gives_up_after_ok_never_has_its_command_run(
        server: Server, tmp_path: Path) -> None:
    """The worker does nothing until the client's "go": a client that timed out right as
    the server said "ok" runs the command itself, and the worker runs nothing."""
    out = tmp_path / "spec.json"
    with connect(server.socket) as sock:
        answer = send_request(sock, "execdriver", ["spec", "--rootfs", "/", "-o", str(out)],
                              server.client_env())
        assert "ok" in answer, answer
        worker = int(answer["ok"])
        time.sleep(1)       # (time enough for a worker that did not wait to write it)
        assert not out.exists()
    assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), timeout=10)
    assert not out.exists()
    with connect(server.socket) as sock:        # with "go", the same request runs
        assert "ok" in send_request(sock, "execdriver",
                                    ["spec", "--rootfs", "/", "-o", str(out)],
                                    server.client_env())
        send_go(sock)
        assert json.loads(sock.recv(4096)) == {"exit": 0}
    assert json.loads(out.read_text())["root"]["path"] == "/"


# --- the verb -----------------------------------------------------------------------------

def test_start_status_stop(tmp_path: Path) -> None:
    sock = str(tmp_path / "bg.sock")
    env = cli_env(tmp_path)

    def server_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "execdriver", "server", *args, "--socket",
                               sock], env=env, capture_output=True, text=True, timeout=60, check=False)
    r = server_cmd("start")
    assert r.returncode == 0 and r.stdout.startswith("started pid "), r.stderr
    pid = int(r.stdout.split()[2].rstrip(","))
    try:
        st = json.loads(server_cmd("status", "--format", "json").stdout)
        assert st == {"running": True, "pid": pid, "served": 0, "prepared": 0,
                      "socket": sock}
        r = server_cmd("start")
        assert r.returncode == 125 and "already answers" in r.stderr
        assert len(r.stderr.splitlines()) == 1
        r = server_cmd("stop")
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
        assert not os.path.exists(sock)
        r = server_cmd("status")
        assert r.returncode == 1 and "not running" in r.stdout
        r = server_cmd("stop")
        assert r.returncode == 125 and "no server answers" in r.stderr
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGTERM)


def test_idle_timeout_ends_the_server(tmp_path: Path) -> None:
    srv = Server(tmp_path, "--idle-timeout", "0.5")
    try:
        assert srv.proc.wait(timeout=30) == 0
        assert not os.path.exists(srv.socket)
    finally:
        srv.stop()


def test_status_queries_do_not_keep_an_idle_server_alive(tmp_path: Path) -> None:
    """The idle time counts from the last command: status polls (or silent connections)
    do not reset it."""
    srv = Server(tmp_path, "--idle-timeout", "1.5")
    try:
        t0 = time.monotonic()
        while srv.proc.poll() is None and time.monotonic() - t0 < 30:
            srv.status()
            time.sleep(0.1)
        assert srv.proc.poll() == 0, "status polls kept the idle server alive"
    finally:
        srv.stop()


def test_servers_started_at_once_on_one_socket_make_one(tmp_path: Path) -> None:
    """What the compiled front relies on when several first commands start a server at
    once: one listens, the others exit with a one-line error."""
    sock, env = str(tmp_path / "one.sock"), cli_env(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "execdriver", "server", "run", "--socket",
                               sock], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        assert wait_for(lambda: sum(p.poll() is not None for p in procs) == 2, timeout=60)
        for p in procs:
            if p.poll() is not None:
                err = p.communicate()[1]
                assert p.returncode == 125 and len(err.splitlines()) == 1, err
                assert "another server is starting" in err or "already answers" in err, err
        srv = next(p for p in procs if p.poll() is None)
        r = subprocess.run([sys.executable, "-m", "execdriver", "server", "status", "--socket",
                            sock, "--format", "json"], capture_output=True, text=True, env=env,
                           check=False)
        assert json.loads(r.stdout)["pid"] == srv.pid
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


def test_server_needs_root(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "execdriver", "server", "run", "--socket",
                        str(tmp_path / "u.sock")], env=cli_env(tmp_path), capture_output=True,
                       text=True, timeout=60, cwd="/", check=False)
    assert r.returncode == 125 and "needs root" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1


# --- the compiled client without a server to use -------------------------------------------

def test_compiled_client_without_a_server_runs_python(tmp_path: Path, busybox_rootfs: Path) -> None:
    env = {**cli_env(tmp_path), "EXECDRIVER_SERVER_SOCKET": str(tmp_path / "none.sock")}
    c = CompiledCli(tmp_path / "state", env)
    r = c("run", "--rootfs", busybox_rootfs, "--", "/bin/sh", "-c", "echo cold; exit 5")
    assert (r.returncode, r.stdout) == (5, "cold\n"), r.stderr
    r = c("run", "--rootfs", "/nonexistent", "--", "/bin/true")
    assert r.returncode == 125 and len(r.stderr.splitlines()) == 1


def test_compiled_client_with_undecodable_environment_falls_back(
        server: Server, tmp_path: Path, busybox_rootfs: Path) -> None:
    before = server.served()
    env = {k.encode(): v.encode() for k, v in server.client_env().items()}
    env[b"ODD"] = b"\xff\xfe"
    r = subprocess.run([compiled_client("execdriver"), "--root", str(tmp_path / "state"), "run",
                        "--rootfs", str(busybox_rootfs), "--", "/bin/true"], env=env,
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert server.served() == before      # the server refused it; Python ran it


@pytest.mark.parametrize("args,message", [
    (["bogus"], "invalid choice"),
    (["run", "--socket", "/tmp/" + "x" * 120], "path too long"),
    (["start", "--socket", "/tmp/" + "y" * 120], "path too long"),
    (["run", "--idle-timeout", "-5"], "must be >= 0"),
    (["stop", "--socket", "/nonexistent/s.sock"], "no server answers"),
], ids=["verb", "long-run", "long-start", "negative-timeout", "stop-none"])
def test_bad_server_input_is_one_line_and_125(tmp_path: Path, args: list[str],
                                              message: str) -> None:
    env = {**cli_env(tmp_path), "EXECDRIVER_SERVER_SOCKET": str(tmp_path / "s.sock")}
    r = subprocess.run([sys.executable, "-m", "execdriver", "server", *args], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 125 and message in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert not any(n.endswith((".sock", ".tmp")) for n in os.listdir(tmp_path))


def test_another_network_namespace_gets_a_default_server_of_its_own(tmp_path: Path) -> None:
    """A server serves only clients in its own namespaces, so each set of namespaces has
    its own default socket (warm.socket_path, client.c namespace_hash): a caller in a
    private network namespace (a dockerd's shim) starts and then uses a server there,
    instead of being refused by the host's and running cold every time."""
    from execdriver.cli import warm
    compiled = Path(sys.executable).parent / "execdriver-oci"
    if not compiled.exists():
        pytest.skip(f"{compiled} not installed")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    inside = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER_SERVER")}
    env["EXECDRIVER_DEBUG"] = "1"
    try:
        own = os.readlink("/proc/self/ns/net")
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/net") != own)
        path = subprocess.run([*inside, sys.executable, "-c", "from execdriver.cli import "
                               "warm; print(warm.socket_path())"], env=env, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()
        assert path != warm.socket_path()
        root = tmp_path / "oci"
        first = subprocess.run([*inside, str(compiled), "--root", str(root), "list"], env=env,
                               capture_output=True, text=True, timeout=60, check=False)
        assert first.returncode == 0, first.stderr
        wait_for(lambda: os.path.exists(path), timeout=30)     # the compiled client's name
        second = subprocess.run([*inside, str(compiled), "--root", str(root), "list"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 0, second.stderr
        assert "did not take the command" not in second.stderr     # served there
    finally:
        subprocess.run([*inside, sys.executable, "-m", "execdriver", "server", "stop"], env=env,
                       capture_output=True, timeout=60, check=False)
        holder.kill()
        holder.wait()
