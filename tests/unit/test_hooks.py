"""OCI hooks: state JSON on stdin, argv, env, timeout, failures naming the hook."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from execdriver.errors import StepFailed
from execdriver.hooks import hook_command, run_hooks, run_hooks_warn
from execdriver.spec import Hook

STATE = {"ociVersion": "1.0.2", "id": "c1", "pid": 42, "status": "creating", "bundle": "/b"}


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_state_on_stdin_args_and_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = (f"cat > {out}.json; tr '\\0' ' ' < /proc/$$/cmdline > {out}.argv; "
           f"/usr/bin/env > {out}.env")
    run_hooks([{"path": "/bin/sh", "args": ["myhook", "-c", cmd], "env": ["FOO=bar"]}],
              STATE, "prestart")
    assert json.loads((tmp_path / "out.json").read_text()) == STATE
    # args[0] is argv[0] (not the path)
    assert (tmp_path / "out.argv").read_text().split()[0] == "myhook"
    # the environment is the hook's env, not ours
    env = dict(line.split("=", 1) for line in (tmp_path / "out.env").read_text().splitlines())
    assert env["FOO"] == "bar" and "PATH" not in env and "HOME" not in env


def test_empty_args_means_path_as_argv0(tmp_path: Path) -> None:
    out = tmp_path / "argv0"
    hook = script(tmp_path, "h", f'echo "$0" > {out}')
    run_hooks([Hook(path=hook)], STATE, "poststart")
    assert out.read_text().strip() == hook


def test_hooks_run_in_order_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ok = script(tmp_path, "ok", f"echo ok >> {log}")
    bad = script(tmp_path, "bad", "echo something broke >&2; exit 3")
    with pytest.raises(StepFailed) as info:
        run_hooks([{"path": ok}, {"path": bad}, {"path": ok}], STATE, "createRuntime")
    msg = str(info.value)
    assert msg.startswith(f"hook createRuntime path={bad} index=1: exit status 3")
    assert "something broke" in msg
    assert log.read_text() == "ok\n"


def test_timeout_kills_the_hook(tmp_path: Path) -> None:
    hook = script(tmp_path, "slow", "sleep 30")
    t0 = time.monotonic()
    with pytest.raises(StepFailed, match="timed out after 1s"):
        run_hooks([{"path": hook, "timeout": 1}], STATE, "prestart")
    assert time.monotonic() - t0 < 10


def test_hook_not_reading_stdin_and_leaving_a_daemon(tmp_path: Path) -> None:
    # stdin and output are memfds: a hook that ignores stdin and leaves a child
    # holding its stdout open does not block us.
    hook = script(tmp_path, "daemon", "(sleep 30 &) ; exit 0")
    big = dict(STATE, annotations={f"k{i}": "v" * 100 for i in range(2000)})
    t0 = time.monotonic()
    run_hooks([{"path": hook}], big, "poststart")
    assert time.monotonic() - t0 < 10


def test_missing_or_relative_path(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="cannot execute: No such file or directory"):
        run_hooks([{"path": str(tmp_path / "nope")}], STATE, "prestart")
    with pytest.raises(StepFailed, match="path must be absolute"):
        run_hooks([{"path": "relative"}], STATE, "prestart")


def test_killed_by_signal(tmp_path: Path) -> None:
    hook = script(tmp_path, "sig", "kill -9 $$")
    with pytest.raises(StepFailed, match="killed by signal 9"):
        run_hooks([{"path": hook}], STATE, "poststop")


def test_warn_mode_runs_every_hook(tmp_path: Path) -> None:
    log = tmp_path / "log"
    bad = script(tmp_path, "bad", "exit 1")
    ok = script(tmp_path, "ok", f"echo ran >> {log}")
    warnings: list[str] = []
    run_hooks_warn([{"path": bad}, {"path": ok}], STATE, "poststop", warnings.append)
    assert log.read_text() == "ran\n"
    assert len(warnings) == 1 and "hook poststop" in warnings[0] and bad in warnings[0]


def test_hook_command_accepts_models_and_dicts() -> None:
    a = hook_command(Hook(path="/x", args=["x", "1"], env=["A=1"], timeout=5))
    b = hook_command({"path": "/x", "args": ["x", "1"], "env": ["A=1"], "timeout": 5})
    assert (a.path, a.args, a.env, a.timeout) == (b.path, b.args, b.env, b.timeout)


def test_hook_gets_no_fd_of_ours(tmp_path: Path) -> None:
    import os
    leaked = os.open(tmp_path, os.O_RDONLY)       # inheritable, like a caller's fd
    os.set_inheritable(leaked, True)
    try:
        out = tmp_path / "fds"
        run_hooks([{"path": "/bin/sh", "args": ["sh", "-c", f"ls /proc/self/fd > {out}"]}],
                  STATE, "prestart")
        fds = sorted(int(x) for x in out.read_text().split())
        assert fds == [0, 1, 2, 3]          # 3: ls's own directory fd
    finally:
        os.close(leaked)
