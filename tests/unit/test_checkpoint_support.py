"""Checkpoint/restore without root or CRIU: which CRIU is used and the one-line error
otherwise (fake binaries), what of a criu log the error quotes, the cgroup binds seen in
a mountinfo, and runc's checkpoint/restore command lines as execdriver-oci parses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from execdriver.errors import UnsupportedHost
from execdriver.libcontainer import checkpoint


def fake_criu(path: Path, version: str, check_ok: bool) -> str:
    path.write_text("#!/bin/sh\n"
                    f"[ \"$1\" = --version ] && echo 'Version: {version}' && exit 0\n"
                    f"[ \"$1\" = check ] && exit {0 if check_ok else 1}\nexit 2\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(("version", "check_ok", "why"), [
    ("3.17.1", False, "found 3.17.1 at {} (its `criu check` fails on this kernel)"),
    ("3.19", True, "found 3.19 at {} (too old)"),
    ("4.0", True, "found 4.0 at {} (too old)"),
    ("4.1.1", False, "found 4.1.1 at {} (its `criu check` fails on this kernel)"),
])
def test_an_unusable_criu_is_one_line_naming_what_is_needed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, check_ok: bool,
        why: str) -> None:
    path = fake_criu(tmp_path / "criu", version, check_ok)
    monkeypatch.setenv("EXECDRIVER_CRIU", path)
    with pytest.raises(UnsupportedHost) as err:
        checkpoint.find_criu("restore")
    assert str(err.value) == "restore needs CRIU >= 4.1; " + why.format(path)


@pytest.mark.parametrize("version", ["4.1", "4.1.1", "4.2", "5.0"])
def test_a_usable_criu_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                version: str) -> None:
    path = fake_criu(tmp_path / f"criu-{version}", version, True)
    monkeypatch.setenv("EXECDRIVER_CRIU", path)
    assert checkpoint.find_criu() == path
    assert checkpoint.criu_available() == (True, path)


def test_the_built_one_comes_before_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECDRIVER_CRIU", raising=False)
    built = tmp_path / "built"
    built.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_criu(built / "criu", "4.1.1", True)
    fake_criu(bindir / "criu", "3.17.1", False)
    monkeypatch.setenv("EXECDRIVER_CRIU_DIR", str(built))
    monkeypatch.setenv("PATH", str(bindir))
    assert checkpoint.criu_candidates()[:2] == [str(built / "criu"), str(bindir / "criu")]
    assert checkpoint.find_criu() == str(built / "criu")
    (built / "criu").unlink()
    with pytest.raises(UnsupportedHost, match=r"found 3\.17\.1 at .*/bin/criu"):
        checkpoint.find_criu()


def test_none_found_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECDRIVER_CRIU", str(tmp_path / "nothing"))
    with pytest.raises(UnsupportedHost, match=r"checkpoint needs CRIU >= 4\.1; none found .*"
                                              r"scripts/build-criu\.sh"):
        checkpoint.find_criu()


def test_the_error_quotes_the_last_errors_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_text("(00.01) Warn  (criu/kerndat.c:1637): no nftables\n"
                   "(00.02) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self\n"
                   "(00.03) Error (criu/mount.c:10): mnt: first\n"
                   "(00.04) Error (criu/cr-restore.c:2320): Restoring FAILED.\n")
    assert checkpoint._criu_errors(log) == "mnt: first; Restoring FAILED."
    log.write_text("(00.05) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: x\n"
                   "(00.05) Error (criu/sockets.c:628): sockets: Can't get 1:34 opt: x\n"
                   "(00.05) Error (criu/cr-dump.c:1681): Dump files (pid: 7) failed with -1\n"
                   "(00.11) Error (criu/cr-dump.c:2111): Dumping FAILED.\n")
    assert checkpoint._criu_errors(log) == ("sockets: Can't get 1:16 opt: x; sockets: Can't get "
                                            "1:34 opt: x; ...; Dumping FAILED.")
    assert checkpoint._criu_errors(tmp_path / "none") == "criu wrote no log"


def test_cgroup_binds_are_the_hierarchies_seen_below_their_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 8:1 /rootfs / rw - ext4 /dev/vda rw\n"
        "2 1 0:5 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n"
        "3 2 0:6 /libpod/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        "4 2 0:7 / /sys/fs/cgroup/cpu ro shared:3 - cgroup cgroup rw,cpu\n"
        "5 2 0:8 /x /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n")
    real_open = open

    def fake_open(path: str, *a: object, **kw: object) -> object:
        return real_open(info if path == "/proc/42/mountinfo" else path, *a, **kw)  # type: ignore[call-overload]
    monkeypatch.setattr("builtins.open", fake_open)
    assert checkpoint._cgroup_binds(42) == ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified"]


def test_runc_command_lines_parse() -> None:
    from execdriver.oci.parser import build_parser
    p = build_parser()
    a = p.parse_args(["--root", "/r", "--criu", "/opt/criu", "checkpoint", "--image-path", "/i",
                      "--work-path", "/w", "--leave-running", "--tcp-established",
                      "--file-locks", "--manage-cgroups-mode", "soft", "c1"])
    assert (a.verb, a.id, a.image_path, a.work_path, a.leave_running, a.criu) == \
        ("checkpoint", "c1", "/i", "/w", True, "/opt/criu")
    # containerd's shim (go-runc) spells -no-subreaper with one dash
    a = p.parse_args(["restore", "--image-path", "/i", "--work-path", "/w", "--detach",
                      "--pid-file", "/p", "-no-subreaper", "--bundle", "/b", "c1"])
    assert (a.verb, a.detach, a.pid_file, a.no_subreaper, a.bundle) == \
        ("restore", True, "/p", True, "/b")


@pytest.mark.parametrize("argv", [["checkpoint", "--pre-dump", "c1"],
                                  ["checkpoint", "--page-server", "h:1", "c1"],
                                  ["restore", "--lazy-pages", "c1"],
                                  ["restore", "--empty-ns", "network", "c1"]])
def test_what_is_not_supported_is_one_line(argv: list[str], capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    from execdriver.oci import cli
    assert cli.main(["--root", str(tmp_path), *argv]) != 0
    err = capsys.readouterr().err
    assert f"{argv[0]} {argv[1]}: not supported" in err and err.count("\n") == 1
