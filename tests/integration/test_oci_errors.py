"""execdriver-oci failures that used to be silent (issue 18, item 5), on the real kernel.

Every failure leaves one line on stderr and the same message as an error entry in
``--log`` (JSON or logrus text), exits non-zero and leaves nothing behind: no state
(``state ID`` fails), no cgroup, no process. ``run`` relays what the init meets after start
(cwd, execve); ``create`` is to refuse a bad ``process.cwd`` or a missing executable
itself, as runc does (its init checks both before it waits for ``start``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import test_oci_lifecycle
from cgroup_leftovers import cgroup_dirs, cgroup_pids
from test_oci_lifecycle import Oci, bundle, cid, message

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

oci = test_oci_lifecycle.oci       # the fixture: an Oci on a scratch --root, emptied after

# create checks the cwd and the command in the init before it waits for start
# (execdriver/kernel/init.py), as runc does: start's caller could not hear them.
CREATE = "create"

BAD_CWDS = {
    "leaked-fd": "/proc/self/fd/7",     # CVE-2024-21626's shape
    "file-component": "/bin/sh/x",      # /bin/sh is a file in busybox
    "missing": "/no/such/dir",
    "relative": "rel/dir",
}


def failed(oci: Oci, tmp_path: Path, *args: str, fmt: str = "json") -> str:
    """Run a call that must fail; check stderr and --log agree on one line; its message."""
    log = tmp_path / f"log-{uuid.uuid4().hex[:6]}"
    r = oci("--log", str(log), "--log-format", fmt, *args, ok=False)
    assert r.returncode not in (0, 126), f"{args}: rc={r.returncode} {r.stderr!r}"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"{args}: stderr {r.stderr!r}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert log.exists(), f"{args}: nothing in --log"
    entries = log.read_text().splitlines()
    if fmt == "json":
        errors = [e for e in map(json.loads, entries) if e["level"] == "error"]
        assert [e["msg"] for e in errors] == [lines[0]] and errors[0]["time"]
    else:
        errors = [e for e in entries if " level=error " in e]
        assert len(errors) == 1 and errors[0].endswith(f"msg={json.dumps(lines[0])}"), entries
    return lines[0]


def assert_nothing_left(oci: Oci, c: str) -> None:
    r = oci("state", c, ok=False)
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert not (oci.root / c).exists()
    assert [p.name for p in oci.root.glob(f".{c}*")] == []
    assert cgroup_dirs(c) == [] and cgroup_pids(c) == []


@pytest.mark.parametrize("verb, cwd", [
    pytest.param(verb, cwd, id=f"{name}-{verb}")
    for name, cwd in BAD_CWDS.items() for verb in ("run", "create")])
def test_bad_cwd_is_a_one_line_error(oci: Oci, tmp_path: Path, busybox_rootfs: Path,
                                     verb: str, cwd: str) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["true"], **{"process.cwd": cwd})
    msg = failed(oci, tmp_path, verb, "--bundle", str(b), c)
    assert "cwd" in msg and (cwd in msg or "must be an absolute path" in msg), msg
    assert_nothing_left(oci, c)


def test_bad_cwd_in_the_text_log_format(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["true"], **{"process.cwd": "/bin/sh/x"})
    msg = failed(oci, tmp_path, "run", "--bundle", str(b), c, fmt="text")
    assert "/bin/sh/x" in msg and "not a directory" in msg   # (runc's spelling)
    # without --log the logrus line itself goes to stderr
    r = oci("run", "--bundle", str(b), c, ok=False)
    assert r.returncode == 1 and "/bin/sh/x" in message(r)
    assert_nothing_left(oci, c)


@pytest.mark.parametrize("verb", ["run", CREATE])
def test_missing_executable_is_a_one_line_error(oci: Oci, tmp_path: Path, busybox_rootfs: Path,
                                                verb: str) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["no-such-command"])
    msg = failed(oci, tmp_path, verb, "--bundle", str(b), c)
    assert "no-such-command" in msg and "not found" in msg, msg
    assert_nothing_left(oci, c)


@pytest.mark.parametrize("verb", ["run", "create"])
def test_a_100mb_annotation_is_refused(oci: Oci, tmp_path: Path, busybox_rootfs: Path,
                                       verb: str) -> None:
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["true"], annotations={"big": "x" * (100 << 20)})
    msg = failed(oci, tmp_path, verb, "--bundle", str(b), c)
    assert "config.json" in msg and "larger than" in msg, msg
    assert_nothing_left(oci, c)


def test_an_init_that_cannot_report_is_not_silent(oci: Oci, tmp_path: Path,
                                                  busybox_rootfs: Path) -> None:
    """A seccomp profile that denies execve and the init's report (sendto) too."""
    deny_all = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW"}]}
    c = cid()
    b = bundle(tmp_path, busybox_rootfs, ["true"], **{"linux.seccomp": deny_all,
                                                      "process.noNewPrivileges": True})
    msg = failed(oci, tmp_path, "run", "--bundle", str(b), c)
    assert msg.startswith("exec: the container process died before exec"), msg
    assert_nothing_left(oci, c)


def test_exec_with_a_bad_cwd(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> None:
    c = cid()
    oci("run", "-d", "--bundle", str(bundle(tmp_path, busybox_rootfs, ["sleep", "100"])), c)
    pids = sorted(cgroup_pids(c))
    for cwd in BAD_CWDS.values():
        msg = failed(oci, tmp_path, "exec", "--cwd", cwd, c, "true")
        assert msg.startswith("exec failed: ") and cwd in msg, msg
        process = tmp_path / "process.json"
        process.write_text(json.dumps({"args": ["true"], "cwd": cwd}))
        msg = failed(oci, tmp_path, "exec", "--process", str(process), c)
        assert msg.startswith("exec failed: ") and "cwd" in msg, msg
        assert cwd in msg or "must be an absolute path" in msg, msg
    assert oci.status(c) == "running" and sorted(cgroup_pids(c)) == pids
    oci("delete", "--force", c)
    assert_nothing_left(oci, c)


def test_an_error_only_execve_sees_is_reported_by_run(oci: Oci, tmp_path: Path,
                                                      rootfs: Path) -> None:
    """execve's own errors (here ENOEXEC) come after start; run, there when they happen,
    reports them instead of passing on a bare 126. A process's own 126 is its exit code."""
    junk = rootfs / "bin" / "junk"
    junk.write_bytes(b"\0 not a program\n")
    junk.chmod(0o755)
    c = cid()
    for args in (["run"], ["run", "--detach"]):
        b = bundle(tmp_path, rootfs, ["/bin/junk"])
        msg = failed(oci, tmp_path, *args, "--bundle", str(b), c)
        assert "/bin/junk" in msg and "exec format error" in msg   # (runc's spelling), msg
        assert_nothing_left(oci, c)
    r = oci("run", "--bundle", str(bundle(tmp_path, rootfs, ["sh", "-c", "exit 126"])), c, ok=False)
    assert (r.returncode, r.stderr) == (126, "")
    assert_nothing_left(oci, c)
