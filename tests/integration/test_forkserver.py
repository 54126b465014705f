"""The fork server (kernel/forkserver.py), on the real kernel (root).

A process that makes more than one container has a small server of its own clone
each stage-1 (CLONE_PARENT: still the caller's child). Each test runs a fresh
Python process (the server's state is per process) and checks what an embedder
relies on: exit statuses, a foreground container's monitor as the caller's child,
threads, the same container set-up as a forked stage-1 (umask, cwd), a server
that dies with its caller, one killed mid-life replaced, a forked copy of the
caller using its own, and EXECDRIVER_FORKSERVER=off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from execdriver.state import pid_alive, pid_start_time
from execdriver.testing.helpers import wait_until


def _has_clone3() -> bool:
    """The server clones with clone3 (Linux 5.3): without it every container is forked
    by its caller, correctly, and there is nothing here to test."""
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (5, 3)
    except (IndexError, ValueError):
        return True


pytestmark = [pytest.mark.root, pytest.mark.timeout(180),
              pytest.mark.skipif(not _has_clone3(), reason="no clone3 (Linux < 5.3)")]

PRELUDE = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    from execdriver.loader import load_driver
    from execdriver.spec import Spec
    from execdriver.kernel import forkserver
    ROOTFS, STATE = sys.argv[1], sys.argv[2]
    d = load_driver("native", state_root=STATE)
    def spec(script):
        return Spec(root={"path": ROOTFS}, process={"args": ["/bin/sh", "-c", script]})
    def run(cid, script="exit 3"):
        st = d.run(cid, spec(script))
        return [st.code, st.signal]
    def until_served():
        # The server starts at the second container and is used once it says ready.
        if forkserver.disabled():
            return
        for i in range(200):
            if forkserver.cloned:
                return
            run(f"warm{os.getpid()}-{i}")
            time.sleep(0.02)
        raise SystemExit("the fork server never cloned a stage-1")
""")


def child(rootfs: Path, state: Path, body: str, env: dict[str, str] | None = None,
          timeout: float = 120) -> dict:
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body),
                          str(rootfs), str(state)], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})}, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_containers_are_cloned_by_the_server_and_stay_the_callers_children(
        busybox_rootfs: Path, tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        until_served()
        before = forkserver.cloned
        statuses = [run(f"s{i}", f"exit {i}") for i in range(4)]
        h = d.start("fg", spec("sleep 30"))
        from execdriver.state import StateStore
        st = StateStore(STATE).read("fg")
        ppid = int([l.split()[1] for l in open(f"/proc/{st.monitor_pid}/status")
                    if l.startswith("PPid:")][0])
        d.kill("fg", signal.SIGKILL)
        end = h.wait(20)
        d.terminate("fg")
        print(json.dumps({"statuses": statuses, "served": forkserver.cloned - before,
                          "monitor_ppid": ppid, "me": os.getpid(),
                          "server": forkserver.server_pid(), "fg": [end.code, end.signal]}))
    """)
    assert got["statuses"] == [[i, None] for i in range(4)]
    assert got["served"] == 5
    assert got["monitor_ppid"] == got["me"]           # CLONE_PARENT: ours to reap and wait on
    assert got["server"] and got["server"] != got["me"]
    assert got["fg"] == [137, 9]


def test_four_threads_share_one_server(busybox_rootfs: Path, tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        until_served()
        before = forkserver.cloned
        results = []
        def worker(n):
            for i in range(5):
                results.append(run(f"t{n}-{i}", f"exit {n}"))
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps({"results": sorted(results), "served": forkserver.cloned - before}))
    """)
    assert got["results"] == sorted([[n, None] for n in range(4) for _ in range(5)])
    assert got["served"] == 20


def test_the_container_is_set_up_as_from_a_forked_stage1(tmp_path: Path) -> None:
    """What stage-1 inherits and a server spawned earlier would not have comes with each
    request: the umask (seen in the mode of the directory the init makes for a mount
    whose destination is missing) and the working directory; and the server's own
    signal dispositions do not reach the container."""
    from execdriver.rootfs import build_busybox
    body = """
        until_served()
        os.umask(0o027)
        os.chdir(sys.argv[2])
        before = forkserver.cloned
        from execdriver.driver import Stdio
        from execdriver.spec import Mount
        s = spec("stat -c '%n %a' /made /made/here; grep ^SigIgn /proc/self/status")
        s.mounts.append(Mount(destination="/made/here", type="tmpfs", source="tmpfs"))
        r, w = os.pipe()
        h = d.start("probe", s, stdio=Stdio(stdout=w))
        os.close(w)
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        out = out.decode()
        h.wait(20); d.terminate("probe")
        print(json.dumps({"out": out, "served": forkserver.cloned - before}))
    """
    results = []
    for name, env in (("a", None), ("b", {"EXECDRIVER_FORKSERVER": "off"})):
        rootfs = build_busybox(tmp_path / f"rootfs-{name}")
        (tmp_path / name).mkdir()
        results.append(child(rootfs, tmp_path / name, body, env=env))
    served, forked = results
    assert served["served"] == 1 and forked["served"] == 0
    # The same set-up either way; and glibc's two reserved signals (32, 33), which
    # posix_spawn leaves ignored in the server, are not ignored in the container (what
    # else its shell ignores depends on the host's busybox).
    assert served["out"] == forked["out"]
    stat_lines, _, sig_line = served["out"].rpartition("SigIgn:")
    assert stat_lines == "/made 750\n/made/here 1777\n"
    assert int(sig_line.strip(), 16) & (1 << 31 | 1 << 32) == 0


def test_the_server_dies_with_its_caller(busybox_rootfs: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent("""
        until_served()
        print(forkserver.server_pid(), flush=True)
        time.sleep(60)
    """), str(busybox_rootfs), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        server = int(proc.stdout.readline())
        start = pid_start_time(server)
        assert pid_alive(server, start)
    finally:
        proc.kill()                                    # ours: this test started it
        proc.wait(10)
    wait_until(lambda: not pid_alive(server, start), 10, what="the fork server to exit")


def test_a_killed_server_is_replaced_and_no_container_fails(busybox_rootfs: Path,
                                                           tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        until_served()
        first = forkserver.server_pid()
        os.kill(first, signal.SIGKILL)      # ours: this process spawned it
        statuses = [run(f"k{i}") for i in range(3)]
        before = forkserver.cloned
        until_served_again = None
        for i in range(200):
            statuses.append(run(f"r{i}"))
            if forkserver.server_pid() not in (None, first) and forkserver.cloned > before:
                break
            time.sleep(0.02)
        print(json.dumps({"ok": all(s == [3, None] for s in statuses), "first": first,
                          "second": forkserver.server_pid()}))
    """)
    assert got["ok"]
    assert got["second"] and got["second"] != got["first"]


def test_a_forked_copy_of_the_caller_uses_its_own(busybox_rootfs: Path, tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        until_served()
        parent_server = forkserver.server_pid()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                statuses = [run(f"f{i}") for i in range(3)]
                os.write(w, json.dumps({"statuses": statuses, "cloned": forkserver.cloned,
                                        "server": forkserver.server_pid()}).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.waitpid(pid, 0)
        res = json.loads(data)
        res["parent_server"] = parent_server
        res["parent_still"] = run("after")
        print(json.dumps(res))
    """)
    assert got["statuses"] == [[3, None]] * 3
    # The copy counts its own containers: its first is forked by itself, never by the
    # parent's server (whose clones would be the parent's children).
    assert got["server"] != got["parent_server"]
    assert got["parent_still"] == [3, None]


def test_off_in_the_environment(busybox_rootfs: Path, tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        statuses = [run(f"o{i}") for i in range(4)]
        time.sleep(0.5)
        statuses += [run(f"p{i}") for i in range(2)]
        print(json.dumps({"statuses": statuses, "cloned": forkserver.cloned,
                          "server": forkserver.server_pid()}))
    """, env={"EXECDRIVER_FORKSERVER": "off"})
    assert got == {"statuses": [[3, None]] * 6, "cloned": 0, "server": None}


def test_no_server_process_is_left_once_the_caller_exits(busybox_rootfs: Path,
                                                        tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        until_served()
        server = forkserver.server_pid()
        from execdriver.state import pid_start_time
        print(json.dumps({"server": server, "start": pid_start_time(server)}))
    """)
    deadline = time.monotonic() + 10
    while pid_alive(got["server"], got["start"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(got["server"], got["start"])


def test_exec_helpers_are_cloned_by_the_server_too(busybox_rootfs: Path, tmp_path: Path) -> None:
    got = child(busybox_rootfs, tmp_path, """
        until_served()
        h = d.start("ex", spec("sleep 30"))
        before = forkserver.cloned
        code = d.exec("ex", d.process_for_exec("ex", ["/bin/sh", "-c", "exit 6"])).code
        cap = d.exec_capture("ex", ["/bin/sh", "-c", "cat; echo err >&2; cat /proc/1/cmdline"],
                             input=b"fed\\n", timeout=20)
        started = d.exec_start("ex", d.process_for_exec("ex", ["/bin/sleep", "30"]))
        os.kill(started.pid, signal.SIGKILL)      # the process in the container: ours
        killed = started.wait(20)
        served = forkserver.cloned - before
        d.kill("ex", signal.SIGKILL); h.wait(20); d.terminate("ex")
        print(json.dumps({"code": code, "out": cap.stdout.decode(), "err": cap.stderr.decode(),
                          "status": cap.status.code, "killed": killed.signal,
                          "served": served}))
    """)
    assert got == {"code": 6, "out": "fed\nsleep\x0030\x00", "err": "err\n",
                   "status": 0, "killed": 9, "served": 3}
