"""Client side of the warm server (``execdriver server``): hand a command line to it.

A cold ``execdriver`` process spends most of its time importing (pydantic, the
spec models, the drivers) before it creates anything. When an ``execdriver
server`` runs, the console scripts instead pass their argv, environment, cwd,
umask and stdio fds over a unix socket; the server forks a worker from its
already-imported process, and the worker runs the very same ``main`` with
them. This module is what the client imports: the stdlib only, nothing heavy.

Protocol (SOCK_SEQPACKET, one JSON object a message):
  client -> server  {"v", "key", "prog", "argv", "env", "umask", "fds", "ignored"}
                    + SCM_RIGHTS: the client's open fds among 0-2, then its cwd
  server -> client  {"fallback": why}   run locally instead (nothing was done), or
                    {"ok": worker_pid}  then, from the worker or the server:
                    {"exit": code} | {"signal": n}   the worker's end
  client -> worker  {"signal": n}       a signal the client got, re-raised there;
                    the client's death (EOF) is a SIGKILL of the worker, so a killed
                    client is a killed execdriver, as without the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

TYPE_CHECKING = False       # (typing costs 2 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 1
MODE_ENV = "EXECDRIVER_SERVER"            # "off": never use a server
SOCKET_ENV = "EXECDRIVER_SERVER_SOCKET"   # another socket than the default one
SOCKET_DIR = "/run/execdriver-server"
# Signals the client passes on. SIGTSTP/SIGCONT stay the client's (job control).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM)
EXIT_ERROR = 125
# execdriver-oci verbs whose caller needs no process of ours as its descendant (create,
# run and exec do: conmon and containerd-shim reap the container as child subreapers).
OCI_SERVED = frozenset({"state", "start", "kill", "delete", "pause", "resume", "list", "ps",
                        "features"})
OCI_OPTIONS_WITH_VALUE = frozenset({"--root", "--log", "--log-format", "--criu", "--rootless"})


def install_key() -> str:
    """Which installation a server belongs to: the interpreter and the package."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return f"{os.path.realpath(sys.executable)}:{pkg}"


def socket_path() -> str:
    """$EXECDRIVER_SERVER_SOCKET, else one default socket per installation."""
    path = os.environ.get(SOCKET_ENV)
    if path:
        return path
    import zlib
    return f"{SOCKET_DIR}/{zlib.crc32(install_key().encode()):08x}.sock"


def _open_fds() -> list[int]:
    out = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            continue
        out.append(fd)
    return out


def oci_verb(argv: object) -> str | None:
    """The verb of an execdriver-oci command line (global options come before it)."""
    if not isinstance(argv, list):
        return None
    i = 0
    while i < len(argv):
        a = argv[i]
        if not isinstance(a, str):
            return None
        if a in OCI_OPTIONS_WITH_VALUE:
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            return a
    return None


def call(prog: str, argv: list[str], error_code: int = EXIT_ERROR) -> int | None:
    """Run ``prog argv`` in the warm server and return its exit status;
    None when there is no server to use (the caller then runs it itself)."""
    if os.environ.get(MODE_ENV) == "off":
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path())
    except OSError:                      # no server (the usual case), or not ours to use
        sock.close()
        return None
    try:
        return _talk(sock, prog, argv, error_code)
    finally:
        sock.close()


def _talk(sock: socket.socket, prog: str, argv: list[str], error_code: int) -> int | None:
    try:
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    fds = _open_fds()
    umask = os.umask(0)
    os.umask(umask)
    # SIGINT is never passed as ignored: main() takes Ctrl-C back from a shell's background job.
    ignored = [int(s) for s in FORWARDED
               if s != signal.SIGINT and signal.getsignal(s) is signal.SIG_IGN]
    request = {"v": PROTOCOL, "key": install_key(), "prog": prog, "argv": argv,
               "env": dict(os.environ), "umask": umask, "fds": fds, "ignored": ignored}
    try:
        socket.send_fds(sock, [json.dumps(request).encode()], fds + [cwd])
        first = _recv(sock)
    except OSError:
        return None
    finally:
        os.close(cwd)
    if first is None or "ok" not in first:
        if os.environ.get("EXECDRIVER_DEBUG"):
            why = (first or {}).get("fallback", "no answer")
            print(f"{prog}: debug: the server did not take the command ({why}): running "
                  "it here", file=sys.stderr)
        return None                      # fallback: nothing ran, run locally

    def forward(signum: int, _frame: object) -> None:
        try:
            sock.send(json.dumps({"signal": signum}).encode())
        except OSError:
            pass
    for s in FORWARDED:
        if s not in ignored:
            signal.signal(s, forward)
    while True:
        try:
            msg = _recv(sock)
        except OSError:
            msg = None
        if msg is None:
            print(f"{prog}: the execdriver server went away before the command ended",
                  file=sys.stderr)
            return error_code
        if "exit" in msg:
            return int(msg["exit"])
        if "signal" in msg:
            # Die the way the worker died, so our caller sees what it would have seen.
            signum = int(msg["signal"])
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return 128 + signum


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    data = sock.recv(65536)
    if not data:
        return None
    return json.loads(data)
