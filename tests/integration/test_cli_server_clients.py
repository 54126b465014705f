"""The warm server against clients that stall, flood or vanish, and clients against a
server that is stuck: no connection holds up another, and a client never waits on the
server longer than its timeout before running the command itself (root)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli_chroot import Cli, cli_env
from test_cli_server import (
    CompiledCli,
    Server,
    compiled_client,
    connect,
)

pytestmark = pytest.mark.root

HERE = Path(__file__).resolve().parent
SO_SNDBUFFORCE = 32


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture(params=["python", "compiled"])
def client_cls(request: pytest.FixtureRequest) -> type[Cli]:
    return CompiledCli if request.param == "compiled" else Cli


# --- idle, oversize and silent connections hold up no one -------------------------------

@pytest.mark.parametrize("idle", [4, 20, 70])
def test_idle_connections_do_not_hold_up_a_served_command(
        server: Server, client_cls: type[Cli], tmp_path: Path, idle: int) -> None:
    """Connections that send nothing: `list` is still served at once. Past MAX_PENDING
    (64) the oldest are closed (their clients would run the command themselves)."""
    # a long client timeout: the command must be served, not fall back
    cli = client_cls(tmp_path / "state", server.client_env(EXECDRIVER_SERVER_TIMEOUT="60"))
    before = server.served()
    socks = [connect(server.socket) for _ in range(idle)]
    try:
        start = time.monotonic()
        r = cli("list", "-q", timeout=60)
        elapsed = time.monotonic() - start
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
        assert elapsed < 2.0, f"list took {elapsed:.1f} s behind {idle} idle connections"
        dropped = max(0, idle - 64)
        for sock in socks[:dropped]:
            sock.settimeout(5)
            assert sock.recv(4096) == b"", "the oldest pending connection was not dropped"
    finally:
        for sock in socks:
            sock.close()
    assert server.served() == before + 1


def test_an_oversize_request_is_dropped_and_a_silent_one_expires(
        server: Server, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "state", server.client_env(EXECDRIVER_SERVER_TIMEOUT="60"))
    silent = connect(server.socket)
    opened = time.monotonic()
    try:
        with connect(server.socket) as huge:
            huge.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
            huge.send(b"{" + b" " * (2 << 20) + b"}")       # 2 MiB: over MAX_REQUEST
            huge.settimeout(10)
            assert huge.recv(4096) == b"", "an oversize request must be dropped unanswered"
        before = server.served()
        assert cli.ok("list", "-q") == ""
        assert server.served() == before + 1
        silent.settimeout(15)
        assert silent.recv(4096) == b"", "a silent connection must be closed unanswered"
        assert 4.0 < time.monotonic() - opened < 10.0     # REQUEST_TIMEOUT is 5 s
    finally:
        silent.close()


# --- a stuck server: the client runs the command itself ----------------------------------

class StuckServer:
    """A socket at the server's path that never answers: ``silent`` accepts (the kernel
    queues the connection) and never replies; ``full`` has a full backlog."""

    def __init__(self, path: str, mode: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(0 if mode == "full" else 8)
        self.filler = connect(path) if mode == "full" else None

    def close(self) -> None:
        if self.filler is not None:
            self.filler.close()
        self.listener.close()


@pytest.mark.parametrize("mode", ["silent", "full"])
@pytest.mark.parametrize("timeout", ["0.5", None], ids=["timeout-0.5", "default"])
def test_a_stuck_server_costs_a_client_only_its_timeout(
        client_cls: type[Cli], tmp_path: Path, mode: str, timeout: str | None) -> None:
    from execdriver.cli import warm
    path = str(tmp_path / "stuck.sock")
    stuck = StuckServer(path, mode)
    env = {**cli_env(tmp_path), "EXECDRIVER_SERVER_SOCKET": path, "EXECDRIVER_DEBUG": "1"}
    if timeout:
        env["EXECDRIVER_SERVER_TIMEOUT"] = timeout
    limit = float(timeout or warm.TIMEOUT)
    cli = client_cls(tmp_path / "state", env)
    try:
        start = time.monotonic()
        r = cli("list", "-q", timeout=30)
        elapsed = time.monotonic() - start
    finally:
        stuck.close()
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    if mode == "full":                  # connect() fails at once: no waiting at all
        assert "(busy): running it here" in r.stderr, r.stderr
        assert elapsed < limit + 15, elapsed
    else:                               # the timeout, then a cold run of `list`
        assert "(timed out): running it here" in r.stderr, r.stderr
        assert limit <= elapsed < limit + 15, elapsed


# --- the compiled front classifies as warm.servable() does --------------------------------

class RecordingServer:
    """Answers every request "ok", then (after "go") exit 42, running nothing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(8)
        self.requests: list[tuple[str, list[str]]] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            conn, _ = self.listener.accept()
            with conn:
                try:
                    req = json.loads(conn.recv(1 << 20))
                    if "prog" not in req:
                        continue                # (e.g. `server status` run cold)
                    self.requests.append((req["prog"], req["argv"]))
                    conn.send(b'{"ok": 0}')
                    conn.settimeout(10)
                    data, fds, _, _ = socket.recv_fds(conn, 4096, 8)
                    for fd in fds:
                        os.close(fd)
                    if json.loads(data) == {"go": 1} and len(fds) == len(req["fds"]) + 1:
                        conn.send(b'{"exit": 42}')
                except (OSError, ValueError):
                    continue

    def close(self) -> None:
        self.stopped = True
        connect(self.path).close()          # (wakes the accept)
        self.thread.join(timeout=10)
        self.listener.close()


AGREEMENT_SAMPLES = [
    ("execdriver", ["list"]), ("execdriver", ["--root", "R", "ls", "-q"]),
    ("execdriver", ["--root=R", "--debug", "info", "x"]), ("execdriver", ["--version"]),
    ("execdriver", []), ("execdriver", ["--root"]), ("execdriver", ["server", "status"]),
    ("execdriver", ["--ro", "R", "list"]), ("execdriver", ["-h"]),
    ("execdriver", ["--", "list"]), ("execdriver", ["--version=1", "list"]),
    ("execdriver", ["", "list"]), ("execdriver", ["bogus"]),
    ("execdriver-oci", ["state", "c1"]), ("execdriver-oci", ["--root", "R", "kill", "c1"]),
    ("execdriver-oci", ["--root=R", "--log", "L", "--log-format=json", "delete", "c1"]),
    ("execdriver-oci", ["-v", "--systemd-cgroup", "--debug", "list"]),
    ("execdriver-oci", ["features"]), ("execdriver-oci", []),
    ("execdriver-oci", ["create", "c1"]), ("execdriver-oci", ["run", "c1"]),
    ("execdriver-oci", ["exec", "c1", "ls"]), ("execdriver-oci", ["--version"]),
    ("execdriver-oci", ["--cri", "state", "create", "c1"]),
    ("execdriver-oci", ["--criu=state", "create", "c1"]),
    ("execdriver-oci", ["--root", "state", "create", "c1"]),
    ("execdriver-oci", ["--", "state", "c1"]), ("execdriver-oci", ["-vstate", "c1"]),
]


def test_the_compiled_front_classifies_as_python_does(tmp_path: Path) -> None:
    from execdriver.cli import warm
    fronts = {prog: compiled_client(prog) for prog in ("execdriver", "execdriver-oci")}
    path = str(tmp_path / "rec.sock")
    recorder = RecordingServer(path)
    env = {**cli_env(tmp_path), "EXECDRIVER_SERVER_SOCKET": path,
           "EXECDRIVER_ROOT": str(tmp_path / "state"),
           "EXECDRIVER_OCI_ROOT": str(tmp_path / "oci")}
    disagree = []
    try:
        for prog, argv in AGREEMENT_SAMPLES:
            del recorder.requests[:]
            # (a sample not served runs cold, in an empty directory: each one fails harmlessly)
            r = subprocess.run([fronts[prog], *argv], env=env, cwd=tmp_path,
                               capture_output=True, timeout=60, check=False)
            served = r.returncode == 42 and recorder.requests == [(prog, argv)]
            if served != warm.servable(prog, argv):
                disagree.append((prog, argv, served))
    finally:
        recorder.close()
    assert not disagree, f"compiled front vs warm.servable (prog, argv, compiled): {disagree}"


# --- the peer is pinned by a pidfd ---------------------------------------------------------

PID_REUSE_CLIENT = f"""
import json, os, socket, sys
sys.path.insert(0, {str(HERE)!r})
from test_cli_server import send_request
path, root = sys.argv[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect(path)                   # this process is the peer the server sees
if os.fork() == 0:                   # the child keeps the connection
    sys.stdin.readline()             # until the test has given our pid to another process
    answer = send_request(sock, "execdriver", ["--root", root, "list", "-q"], dict(os.environ))
    print(json.dumps(answer), flush=True)
    os._exit(0)
print(os.getpid(), flush=True)
"""


def _take_pid(pid: int) -> subprocess.Popen[bytes]:
    """A process that passes every check of the server, with pid ``pid`` (freed)."""
    for _ in range(50):
        if os.path.exists(f"/proc/{pid}"):
            break
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(["sleep", "60"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"pid {pid} went to another process first")


def test_a_reused_pid_is_not_taken_for_the_client(server: Server, tmp_path: Path) -> None:
    """A client in another network namespace connects, hands the connection to its child
    and exits; its pid goes to a process in the server's namespaces. The server must not
    check that process for the client's: SO_PEERCRED's pid would pass, the pidfd does not."""
    before = server.served()
    proc = subprocess.Popen(["unshare", "--net", sys.executable, "-c", PID_REUSE_CLIENT,
                             server.socket, str(tmp_path / "state")],
                            env=server.client_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        peer = int(proc.stdout.readline())
        assert proc.wait(timeout=30) == 0
        impostor = _take_pid(peer)
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        finally:
            impostor.kill()
            impostor.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert line, proc.stderr.read() if proc.stderr else ""
    assert json.loads(line) == {"fallback": "client gone"}
    assert server.served() == before
