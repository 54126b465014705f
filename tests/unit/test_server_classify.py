"""Which command lines the warm server may run (warm.CLASSIFICATION): the client's rule,
the server's check of the verb its parser finds, the tables against the parsers, and
how the server identifies its peer."""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import pytest

from execdriver.cli import client_build, server, warm
from execdriver.oci.errors import UsageError

SAMPLES = [
    # (prog, argv, servable)
    ("execdriver", ["list"], True),
    ("execdriver", ["--root", "/r", "ls", "-q"], True),
    ("execdriver", ["--root=/r", "--debug", "run", "--rootfs", "x"], True),
    ("execdriver", ["--root", "server", "list"], True),       # "server" is --root's value
    ("execdriver", ["resume", "c1"], True),
    ("execdriver", ["rootfs", "busybox", "x"], True),
    ("execdriver", ["--version"], True),
    ("execdriver", [], True),                                   # the help
    ("execdriver", ["server", "status"], False),
    ("execdriver", ["--debug", "server", "run"], False),
    ("execdriver", ["--ro", "/r", "list"], False),              # an abbreviation
    ("execdriver", ["-h"], False),
    ("execdriver", ["--", "list"], False),
    ("execdriver", ["--version=1", "list"], False),
    ("execdriver", ["", "list"], False),
    ("execdriver", ["bogus"], False),
    ("execdriver-oci", ["state", "c1"], True),
    ("execdriver-oci", ["--root", "/r", "start", "c1"], True),
    ("execdriver-oci", ["--root=/r", "--log", "/l", "--log-format", "json", "kill", "c1"], True),
    ("execdriver-oci", ["--debug", "--systemd-cgroup", "-v", "delete", "c1"], True),
    ("execdriver-oci", ["--criu", "/c", "--rootless", "false", "list"], True),
    ("execdriver-oci", ["features"], True),
    ("execdriver-oci", ["create", "c1"], False),
    ("execdriver-oci", ["run", "-d", "c1"], False),
    ("execdriver-oci", ["exec", "c1", "/bin/true"], False),
    ("execdriver-oci", ["spec"], False),
    ("execdriver-oci", [], False),
    ("execdriver-oci", ["--version"], False),
    ("execdriver-oci", ["--cri", "state", "create", "c1"], False),
    ("execdriver-oci", ["--roo", "state", "create", "c1"], False),
    ("execdriver-oci", ["--criu=state", "create", "c1"], False),
    ("execdriver-oci", ["--root", "state", "create", "c1"], False),
    ("execdriver-oci", ["--log-f", "json", "state", "c1"], False),
    ("execdriver-oci", ["--", "state", "c1"], False),
    ("execdriver-oci", ["-vstate", "c1"], False),
    ("execdriver-oci", ["--debug=1", "state", "c1"], False),
    ("execdriver-oci", ["-h"], False),
    ("other", ["list"], False),
]


@pytest.mark.parametrize("prog,argv,expected", SAMPLES,
                         ids=[f"{p} {' '.join(a) or '-'}" for p, a, _ in SAMPLES])
def test_servable(prog: str, argv: list[str], expected: bool) -> None:
    assert warm.servable(prog, argv) is expected


@pytest.mark.parametrize("prog,argv,_expected", SAMPLES,
                         ids=[f"{p} {' '.join(a) or '-'}" for p, a, _ in SAMPLES])
def test_what_the_client_sends_the_server_parses_to_a_served_verb(
        prog: str, argv: list[str], _expected: bool) -> None:
    """The property that matters: what the server serves, its parser runs as a served verb."""
    if server.refuse_command(prog, argv) == "":
        verb = server.parsed_verb(prog, argv)
        assert verb is not None and warm.verb_served(prog, verb)
        assert warm.servable(prog, argv)


@pytest.mark.parametrize("argv", [["--cri", "state", "create", "c1"],
                                  ["--root", "/r", "create", "c1"], ["run", "c1"],
                                  ["exec", "c1", "ls"], ["--criu", "x", "run", "c1"]])
def test_oci_create_run_exec_are_refused_by_the_server(argv: list[str]) -> None:
    assert server.refuse_command("execdriver-oci", argv) == "verb"


def test_the_server_refuses_what_does_not_parse() -> None:
    # the client's rule lets these through; the parser does not
    assert warm.servable("execdriver", ["--root"])
    assert server.refuse_command("execdriver", ["--root"]) == "verb"
    assert server.refuse_command("execdriver-oci", ["state"]) == "verb"
    assert server.refuse_command("execdriver-oci", ["state", "--help"]) == "verb"
    assert server.refuse_command("execdriver", ["list", "--help"]) == "verb"


def test_parsing_in_the_server_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert server.parsed_verb("execdriver", ["--help"]) is None
    assert server.parsed_verb("execdriver-oci", ["--bogus", "state", "c1"]) is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("prog,argv,verb", [
    ("execdriver", ["ls"], "list"), ("execdriver", ["resume", "c1"], "unpause"),
    ("execdriver", ["rootfs", "busybox", "d"], "rootfs busybox"), ("execdriver", ["--version"], ""),
    ("execdriver-oci", ["--root", "/r", "kill", "-a", "c1"], "kill"),
    ("execdriver-oci", ["list", "-q"], "list"), ("execdriver-oci", ["--criu", "x", "run", "c"], "run"),
])
def test_parsed_verb(prog: str, argv: list[str], verb: str) -> None:
    assert server.parsed_verb(prog, argv) == verb
    assert warm.verb_served(prog, verb) is warm.servable(prog, argv)


def test_the_servers_parse_catches_a_wrong_client_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the word rule wrong again (as before: any "-..." word skipped) and the OCI
    parser abbreviating again, the verb the server parses still decides."""
    from execdriver.oci import parser

    def old_rule(prog: str, argv: object) -> int | None:
        assert isinstance(argv, list)
        return next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))

    def abbreviating() -> argparse.ArgumentParser:
        p = build()
        p.allow_abbrev = True
        return p
    build = parser.build_parser
    monkeypatch.setattr(warm, "verb_index", old_rule)
    monkeypatch.setattr(parser, "build_parser", abbreviating)
    monkeypatch.setattr(server, "_oci_parser", [])
    argv = ["--cri", "state", "create", "c1"]
    assert warm.servable("execdriver-oci", argv)                # the old client's mistake
    assert server.parsed_verb("execdriver-oci", argv) == "create"
    assert server.refuse_command("execdriver-oci", argv) == "verb"


@pytest.mark.parametrize("argv", [["--cri", "x", "state", "c1"], ["--roo", "/r", "state", "c1"],
                                  ["--log-f", "json", "state", "c1"], ["--deb", "state", "c1"]])
def test_the_oci_parser_takes_no_abbreviation(argv: list[str]) -> None:
    from execdriver.oci.parser import build_parser
    with pytest.raises(UsageError):
        build_parser().parse_args(argv)


# --- the tables against the parsers --------------------------------------------------------

def _globals(p: argparse.ArgumentParser) -> tuple[set[str], set[str], set[str]]:
    """(options taking a value, flags, verbs) of a parser, before the verb."""
    values: set[str] = set()
    flags: set[str] = set()
    verbs: set[str] = set()
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            verbs.update(action.choices)
        elif isinstance(action, argparse._HelpAction):
            continue                    # (the help is never served: not in the table)
        elif action.option_strings:
            (flags if action.nargs == 0 else values).update(action.option_strings)
    return values, flags, verbs


def test_the_oci_table_matches_the_oci_parser() -> None:
    from execdriver.oci.parser import build_parser
    served, values, flags, bare = warm.CLASSIFICATION["execdriver-oci"]
    p_values, p_flags, p_verbs = _globals(build_parser())
    assert (set(values), set(flags)) == (p_values, p_flags)
    assert served <= p_verbs
    assert not served & {"create", "run", "exec"}
    assert not bare


def test_the_execdriver_table_matches_its_parser() -> None:
    """Every verb but server is served: a new verb must be added here (or refused) by choice."""
    from execdriver.cli.parser import build_parser
    served, values, flags, bare = warm.CLASSIFICATION["execdriver"]
    p_values, p_flags, p_verbs = _globals(build_parser())
    assert (set(values), set(flags)) == (p_values, p_flags)
    assert served == p_verbs - {"server"}
    assert bare


def test_the_compiled_front_gets_the_same_tables() -> None:
    defines = client_build.classification_defines()
    assert defines["PROTOCOL"] == warm.PROTOCOL and defines["TIMEOUT"] == warm.TIMEOUT
    for prog, prefix in client_build.TABLES.items():
        served, values, flags, bare = warm.CLASSIFICATION[prog]
        assert set(str(defines[f"{prefix}_SERVED"]).split()) == served
        assert set(str(defines[f"{prefix}_VALUES"]).split()) == values
        assert set(str(defines[f"{prefix}_FLAGS"]).split()) == flags
        assert defines[f"{prefix}_BARE"] == int(bare)
    assert set(client_build.TABLES) == set(warm.CLASSIFICATION)


def test_oci_verb_keeps_its_meaning() -> None:
    assert warm.oci_verb(["--root", "/r", "state", "c1"]) == "state"
    assert warm.oci_verb(["--cri", "state", "create", "c1"]) is None
    assert warm.oci_verb(["--debug"]) is None


@pytest.mark.parametrize("value,expected", [(None, warm.TIMEOUT), ("0.5", 0.5), ("0", warm.TIMEOUT),
                                            ("-1", warm.TIMEOUT), ("x", warm.TIMEOUT)])
def test_client_timeout(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: float) -> None:
    if value is None:
        monkeypatch.delenv(warm.TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(warm.TIMEOUT_ENV, value)
    assert warm.client_timeout() == expected


# --- the peer --------------------------------------------------------------------------------

def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


@pytest.mark.parametrize("pidfd_option", [server.SO_PEERPIDFD, 9999],
                         ids=["SO_PEERPIDFD", "without-it"])
def test_peer_is_identified_by_a_pidfd(monkeypatch: pytest.MonkeyPatch, pidfd_option: int) -> None:
    """With SO_PEERPIDFD, and without it (older kernels: ENOPROTOOPT) from SO_PEERCRED."""
    monkeypatch.setattr(server, "SO_PEERPIDFD", pidfd_option)
    a, b = _pair()
    with a, b:
        pid, uid, pidfd = server.peer(a)
    try:
        assert (pid, uid) == (str(os.getpid()), os.geteuid())
        assert pidfd >= 0 and server._pidfd_pid(pidfd) == os.getpid()
        assert server._alive(pidfd)
    finally:
        os.close(pidfd)


def test_a_peer_that_is_gone_is_never_checked(tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with listener:
        listener.bind(path)
        listener.listen(1)
        child = os.fork()
        if child == 0:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(path)
            os._exit(0)
        os.waitpid(child, 0)
        conn, _ = listener.accept()
        with conn, pytest.raises(ProcessLookupError):
            server.peer(conn)


def test_a_peer_that_exits_after_the_checks_is_noticed() -> None:
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    pidfd = os.pidfd_open(child)
    try:
        assert server._pidfd_pid(pidfd) == child and server._alive(pidfd)
        os.close(w)
        os.waitpid(child, 0)
        assert not server._alive(pidfd)
        with pytest.raises(ProcessLookupError):
            server._pidfd_pid(pidfd)
    finally:
        os.close(pidfd)
