"""Client side of the warm server (``execdriver server``): hand a command line to it.

A cold ``execdriver`` process spends most of its time importing (pydantic, the
spec models, the drivers) before it creates anything. When an ``execdriver
server`` runs, the console scripts instead pass their argv, environment, cwd,
umask and stdio fds over a unix socket; the server forks a worker from its
already-imported process, and the worker runs the very same ``main`` with
them. This module is what the client imports: the stdlib only, nothing heavy.

Protocol (SOCK_SEQPACKET, one JSON object a message):
  client -> server  {"v", "key", "prog", "argv", "env", "umask", "fds", "ignored"[, "forker"]}
                    ("fds": which of 0-2 the client has open; "forker": 1 for a FORKED
                    verb, from the compiled client only)
  server -> client  {"fallback": why}   run locally instead (nothing was done), or
                    {"ok": worker_pid}  the worker is ready, then
  client -> worker  {"go": 1}           run it (until then the worker does nothing)
                    + SCM_RIGHTS: the client's open fds among 0-2, then its cwd (with
                    "forker": then one end of a socketpair, whose other end the client's
                    child, kernel/forkserver.py's serve_forker, keeps: it forks the
                    worker's containers there, descendants of the client's caller)
  worker -> client  {"fallback": why}   (bad fds: nothing was done), else in the end
                    {"exit": code} | {"signal": n}   (from the worker or the server)
  client -> worker  {"signal": n}       a signal the client got, re-raised there;
                    the client's death (EOF) is a SIGKILL of the worker, so a killed
                    client is a killed execdriver, as without the server.

The client gives the server TIMEOUT seconds (connect, request, "ok"); past that it
runs the command itself. "go" makes that safe: a client that gave up never sent
it, so its worker exits without running anything -- a command never runs twice.
And the client's fds go only with "go", to a worker that is reading them: a stuck
server never holds a client's stdout open (its caller would wait for EOF).

The compiled front (client.c) also starts a server on first use: as root, when no
server answers on the default socket, it starts ``execdriver server run
--idle-timeout $EXECDRIVER_SERVER_IDLE`` (AUTOSTART_IDLE) detached and runs its own
command in Python meanwhile; the next commands are served. EXECDRIVER_SERVER=manual
(or off) and an explicit EXECDRIVER_SERVER_SOCKET turn that off.

Which command lines may be served is decided here, once (``servable``): the
server applies the same rule (and checks the verb its parser finds), and the
compiled front (client.c) is built with these tables (client_build.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

TYPE_CHECKING = False       # (typing costs 2 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 3
MODE_ENV = "EXECDRIVER_SERVER"            # "off": never use a server; "manual": never start one
IDLE_ENV = "EXECDRIVER_SERVER_IDLE"       # seconds an auto-started server waits for a client
AUTOSTART_IDLE = 600.0
PREPARED_MAX = 4 << 20      # bytes: the largest translated config.json a server sends
SOCKET_ENV = "EXECDRIVER_SERVER_SOCKET"   # another socket than the default one
TIMEOUT_ENV = "EXECDRIVER_SERVER_TIMEOUT"  # seconds to wait for the server's answer
TIMEOUT = 2.0               # a healthy server answers in milliseconds; a stuck one costs this
SOCKET_DIR = "/run/execdriver-server"
# Signals the client passes on. SIGTSTP/SIGCONT stay the client's (job control).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM)
EXIT_ERROR = 125

# --- which command lines the server may run --------------------------------------------
# Per program: the verbs it may run (aliases and the names the parser reports), the
# options accepted before the verb (taking a value: "--opt V" or "--opt=V"; flags), and
# whether a command line without a verb (--version, the help) may be served. Any other
# word starting with "-" before the verb (an abbreviation, -h, --) is not classified: the
# client runs such a command itself. Not served: execdriver-oci create, run and exec (their
# caller -- conmon, containerd-shim -- reaps the container as a child subreaper, so the
# container must descend from it, not from the server), nor spec, update, events; and
# execdriver server (it manages the server itself: served, `server run` would be a server
# inside a worker).
CLASSIFICATION: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str], bool]] = {
    "execdriver": (
        frozenset({"run", "exec", "kill", "pause", "unpause", "resume", "info", "state",
                   "list", "ls", "ps", "stats", "terminate", "delete", "rm", "spec", "logs",
                   "wait", "stop", "completion", "events", "drivers", "rootfs", "create", "start",
                   "update", "checkpoint", "restore"}),
        frozenset({"--root"}), frozenset({"--debug", "--version"}), True),
    "execdriver-oci": (
        frozenset({"state", "start", "kill", "delete", "pause", "resume", "list", "ps",
                   "features"}),
        frozenset({"--root", "--log", "--log-format", "--criu", "--rootless"}),
        frozenset({"--debug", "--systemd-cgroup", "-v", "--version"}), False),
}
OCI_SERVED = CLASSIFICATION["execdriver-oci"][0]
#: Verbs served with a forker (the compiled client only): a worker runs the command, but
#: the container's first process is forked by the client's child, a small Python
#: (kernel/forkserver.py's serve_forker), so that it descends from the client's caller
#: (conmon, containerd-shim) as runc's does. Never with --preserve-fds (those are
#: the client's fds, which the worker does not have).
FORKED: dict[str, frozenset[str]] = {"execdriver": frozenset(),
                                     "execdriver-oci": frozenset({"create"})}


def verb_index(prog: str, argv: object) -> int | None:
    """Where the verb of ``prog argv`` is: its index, len(argv) when there is none,
    None when the words before it are not all known global options."""
    if prog not in CLASSIFICATION or not isinstance(argv, list):
        return None
    _served, values, flags, _bare = CLASSIFICATION[prog]
    i = 0
    while i < len(argv):
        word = argv[i]
        if not isinstance(word, str):
            return None
        if not word.startswith("-"):
            return i
        name, eq, _value = word.partition("=")
        if name in values:
            i += 1 if eq else 2
        elif name in flags and not eq:
            i += 1
        else:
            return None
    return len(argv)


def servable(prog: str, argv: object) -> bool:
    """Whether ``prog argv`` may run in the warm server (client.c: servable())."""
    i = verb_index(prog, argv)
    if i is None:
        return False
    assert isinstance(argv, list)
    served, _values, _flags, bare = CLASSIFICATION[prog]
    return argv[i] in served if i < len(argv) else bare


def forkable(prog: str, argv: object) -> bool:
    """Whether ``prog argv`` may be served with a forker (client.c: forkable())."""
    i = verb_index(prog, argv)
    if i is None:
        return False
    assert isinstance(argv, list)
    return i < len(argv) and argv[i] in FORKED[prog] and \
        not any(a.startswith("--preserve-fds") for a in argv[i + 1:])


def verb_served(prog: str, verb: str) -> bool:
    """Whether the verb ``prog``'s own parser found ('' for none) may be served
    ("rootfs busybox" is the rootfs verb)."""
    served, _values, _flags, bare = CLASSIFICATION[prog]
    return verb.split(" ", maxsplit=1)[0] in served if verb else bare


def oci_verb(argv: object) -> str | None:
    """The verb of an execdriver-oci command line; None when it has none or the
    words before it are not classified (then it is not served)."""
    i = verb_index("execdriver-oci", argv)
    if i is None or not isinstance(argv, list) or i >= len(argv):
        return None
    return str(argv[i])


def client_timeout() -> float:
    """$EXECDRIVER_SERVER_TIMEOUT (seconds, > 0), else TIMEOUT."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV) or TIMEOUT)
    except ValueError:
        return TIMEOUT
    return value if 0 < value < 3600 else TIMEOUT


def install_key() -> str:
    """Which installation a server belongs to: the interpreter's real directory (a
    venv's bin, not the base interpreter it links to) and version. client.c derives
    the same from the interpreter it finds, so a moved venv keeps its server."""
    where = os.path.realpath(os.path.dirname(os.path.abspath(sys.executable)))
    return f"{where}:python{sys.version_info[0]}.{sys.version_info[1]}"


def fnv1a(text: str) -> int:
    """FNV-1a, 32 bits (client.c names the default socket with the same hash)."""
    h = 2166136261
    for byte in text.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


#: what a server compares with its client's (server.py: "other namespaces"), and so what
#: names its default socket
NAMESPACES = ("mnt", "net", "pid", "ipc", "uts", "cgroup", "user")


def namespace_hash() -> int:
    """FNV-1a of the caller's namespaces and root ("INO:...:DEV:INO"; 0 when /proc cannot
    tell): each set of them has a default server of its own (client.c: namespace_hash)."""
    try:
        parts = [str(os.stat(f"/proc/self/ns/{ns}").st_ino) for ns in NAMESPACES]
        root = os.stat("/proc/self/root")
    except OSError:
        return 0
    return fnv1a(":".join([*parts, str(root.st_dev), str(root.st_ino)]))


def socket_path() -> str:
    """$EXECDRIVER_SERVER_SOCKET, else the default socket of this installation and these
    namespaces: a server refuses a client in other namespaces (they see other mounts,
    networks, pids), so a caller in another network namespace (a private dockerd, a
    shim there) gets, and starts, a server of its own instead of always running cold."""
    path = os.environ.get(SOCKET_ENV)
    if path:
        return path
    return f"{SOCKET_DIR}/{fnv1a(install_key()):08x}-{namespace_hash():08x}.sock"


def _open_fds() -> list[int]:
    out = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            continue
        out.append(fd)
    return out


def call(prog: str, argv: list[str], error_code: int = EXIT_ERROR) -> int | None:
    """Run ``prog argv`` in the warm server and return its exit status;
    None when there is no server to use (the caller then runs it itself)."""
    if os.environ.get(MODE_ENV) == "off" or not servable(prog, argv):
        return None
    deadline = time.monotonic() + client_timeout()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(client_timeout())
        sock.connect(socket_path())
    except OSError as exc:               # no server (the usual case), not ours, or stuck
        sock.close()
        if isinstance(exc, BlockingIOError):
            _debug(prog, "busy")         # (a full backlog: connect() does not wait then)
        return None
    try:
        return _talk(sock, prog, argv, error_code, deadline)
    finally:
        sock.close()


def prepare_bundle(bundle: str, preserve_fds: int, no_pivot: bool) -> dict[str, Any] | None:
    """An OCI create's config.json translated by a running server (see
    oci.lifecycle.prepare), or None: no server, or it would not (the caller then
    translates it itself). The launch stays with the caller."""
    if os.environ.get(MODE_ENV) == "off":
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(client_timeout())
        sock.connect(socket_path())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PREPARED_MAX)
        sock.send(json.dumps({"v": PROTOCOL, "key": install_key(), "env": dict(os.environ),
                              "prepare": {"bundle": bundle, "preserve_fds": preserve_fds,
                                          "no_pivot": no_pivot}}).encode())
        data = sock.recv(PREPARED_MAX)
        answer = json.loads(data) if data else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    prepared = answer.get("prepared") if isinstance(answer, dict) else None
    if not isinstance(prepared, dict):
        _debug("execdriver-oci", str((answer or {}).get("fallback", "no answer")))
        return None
    return prepared


def _talk(sock: socket.socket, prog: str, argv: list[str], error_code: int,
          deadline: float) -> int | None:
    fds = _open_fds()
    umask = os.umask(0)
    os.umask(umask)
    # SIGINT is never passed as ignored: main() takes Ctrl-C back from a shell's background job.
    ignored = [int(s) for s in FORWARDED
               if s != signal.SIGINT and signal.getsignal(s) is signal.SIG_IGN]
    request = {"v": PROTOCOL, "key": install_key(), "prog": prog, "argv": argv,
               "env": dict(os.environ), "umask": umask, "fds": fds, "ignored": ignored}
    first: dict[str, Any] | None
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.send(json.dumps(request).encode())
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        first = _recv(sock)
        if first is not None and "ok" in first:
            sock.settimeout(None)        # the command itself takes as long as it takes
            cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                socket.send_fds(sock, [b'{"go": 1}'], fds + [cwd])
            finally:
                os.close(cwd)
    except TimeoutError:
        first = {"fallback": "timed out"}
    except (OSError, ValueError):
        first = None
    if first is None or "ok" not in first:
        _debug(prog, str((first or {}).get("fallback", "no answer")))
        return None                      # fallback: nothing ran (no "go"), run locally

    def forward(signum: int, _frame: object) -> None:
        try:
            sock.send(json.dumps({"signal": signum}).encode())
        except OSError:
            pass
    saved = {s: signal.signal(s, forward) for s in FORWARDED if s not in ignored}
    while True:
        try:
            msg = _recv(sock)
        except (OSError, ValueError):
            msg = None
        if msg is None:
            print(f"{prog}: the execdriver server went away before the command ended",
                  file=sys.stderr)
            return error_code
        if "exit" in msg:
            return int(msg["exit"])
        if "fallback" in msg:            # the worker refused what came with "go": nothing ran
            for s, handler in saved.items():
                signal.signal(s, handler)
            _debug(prog, str(msg["fallback"]))
            return None
        if "signal" in msg:
            # Die the way the worker died, so our caller sees what it would have seen.
            signum = int(msg["signal"])
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return 128 + signum


def _debug(prog: str, why: str) -> None:
    if os.environ.get("EXECDRIVER_DEBUG"):
        print(f"{prog}: debug: the server did not take the command ({why}): running it here",
              file=sys.stderr)


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    data = sock.recv(65536)
    if not data:
        return None
    msg = json.loads(data)
    return msg if isinstance(msg, dict) else None
