"""Importing exported image tarballs: contents, compression, progress, and refusing
members that would escape the target directory (archives built with tarfile)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

# ruff: noqa: F811  (pytest fixtures imported from test_cli_support)
from test_cli_support import Cli, assert_one_error_line, cli, hostproc_site  # noqa: F401

from execdriver.cli.rootfs import ProgressBar
from execdriver.errors import InvalidArgument
from execdriver.rootfs import IMPORT_TMP, UnsafeMember, import_tarball

MTIME = 1_600_000_000


Entry = tuple[tarfile.TarInfo, "bytes | None"]


def entry(kind: str, name: str, arg: Any = None, mode: int | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    data = None
    if kind == "file":
        data = arg if isinstance(arg, bytes) else (arg or "").encode()
        info.size = len(data)
        info.mode = 0o644 if mode is None else mode
    elif kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, mode or arg or 0o755
    elif kind == "sym":
        info.type, info.linkname = tarfile.SYMTYPE, arg
    elif kind == "link":
        info.type, info.linkname = tarfile.LNKTYPE, arg
    elif kind == "chr":
        info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
    elif kind == "fifo":
        info.type, info.mode = tarfile.FIFOTYPE, 0o600 if mode is None else mode
    return info, data


def make_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]], comp: str = "") -> Path:
    with tarfile.open(path, "w:" + comp, format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_text("host data\n")
    return d


GOOD = [
    entry("dir", "./"),
    entry("dir", "bin"),
    entry("file", "bin/busybox", b"\x7fELF fake", 0o755),
    entry("sym", "bin/sh", "/bin/busybox"),
    entry("sym", "bin/ls", "busybox"),
    entry("dir", "usr/lib", 0o755),
    entry("sym", "lib", "usr/lib"),
    entry("file", "usr/lib/libc.so", "libc"),
    entry("sym", "usr/lib/up", "../../bin/sh"),
    entry("link", "bin/busybox-hard", "bin/busybox"),
    entry("file", "bin/su", "su", 0o4755),
    entry("dir", "ro", 0o555),
    entry("file", "ro/inside", "x", 0o400),
    entry("file", "deep/implicit/parents", "p"),
    entry("fifo", "run/fifo"),
    entry("file", "etc/motd", "old"),
    entry("file", "etc/motd", "new"),  # a later member replaces an earlier one
]


def check_good(dest: Path) -> None:
    assert sorted(os.listdir(dest)) == ["bin", "deep", "etc", "lib", "ro", "run", "usr"]
    assert (dest / "bin/busybox").read_bytes() == b"\x7fELF fake"
    assert stat.S_IMODE((dest / "bin/busybox").stat().st_mode) == 0o755
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert os.readlink(dest / "bin/ls") == "busybox"
    assert os.readlink(dest / "lib") == "usr/lib"
    assert (dest / "bin/busybox-hard").stat().st_ino == (dest / "bin/busybox").stat().st_ino
    assert stat.S_IMODE((dest / "bin/su").lstat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    assert (dest / "ro/inside").read_text() == "x"
    assert (dest / "deep/implicit/parents").read_text() == "p"
    assert stat.S_ISFIFO((dest / "run/fifo").lstat().st_mode)
    assert (dest / "etc/motd").read_text() == "new"
    assert (dest / "bin/busybox").stat().st_mtime == MTIME
    assert (dest / "ro").stat().st_mtime == MTIME
    assert (dest / "bin/sh").lstat().st_mtime == MTIME
    assert not (dest / IMPORT_TMP).exists()


@pytest.mark.parametrize("comp", ["", "gz", "bz2", "xz"])
def test_import_good_archive(tmp_path: Path, comp: str) -> None:
    tarball = make_tar(tmp_path / f"img.tar.{comp}", GOOD, comp)
    seen: list[tuple[int, int | None]] = []
    report = import_tarball(tarball, tmp_path / "new" / "dest", progress=lambda d, t: seen.append((d, t)))
    check_good(tmp_path / "new" / "dest")
    assert report.members == len(GOOD)
    size = tarball.stat().st_size
    assert report.bytes_read == size
    assert seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_import_into_existing_empty_dir_and_from_file_object(tmp_path: Path) -> None:
    tarball = make_tar(tmp_path / "img.tar", GOOD)
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(tarball, "rb") as f:
        import_tarball(io.BufferedReader(io.BytesIO(f.read())), dest)  # type: ignore[arg-type]
    check_good(dest)


def test_import_from_stdin_with_the_cli(cli: Cli, tmp_path: Path) -> None:
    tarball = make_tar(tmp_path / "img.tar.gz", GOOD, "gz")
    out = cli.ok("rootfs", "import", "-", tmp_path / "dest", input=tarball.read_bytes())
    assert f"imported {len(GOOD)} entries" in out.decode()
    check_good(tmp_path / "dest")


def test_cli_import_of_a_busybox_rootfs(cli: Cli, tmp_path: Path, busybox_rootfs: Path) -> None:
    tarball = tmp_path / "bb.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(busybox_rootfs, arcname=".")
    cli.ok("rootfs", "import", tarball, tmp_path / "bb")
    r = subprocess.run([str(tmp_path / "bb/bin/busybox"), "true"], check=False)
    assert r.returncode == 0
    assert os.readlink(tmp_path / "bb/bin/sh") == "/bin/busybox"
    assert sorted(os.listdir(tmp_path / "bb")) == sorted(os.listdir(busybox_rootfs))


def escapes(outside: Path) -> dict[str, tuple[list[Any], str, str]]:
    """case -> (entries, member named in the error, reason)."""
    o = str(outside)
    return {
        "absolute name": ([entry("file", o + "/pwned", "x")], o + "/pwned", "path is absolute"),
        "dotdot name": ([entry("file", "../outside/pwned", "x")], "../outside/pwned", "'..'"),
        "inner dotdot": ([entry("dir", "a"), entry("file", "a/../../outside/pwned", "x")],
                         "a/../../outside/pwned", "'..'"),
        "relative symlink escape": ([entry("sym", "esc", "../../outside")], "esc",
                                    "points outside the rootfs"),
        "write through absolute symlink": ([entry("sym", "lnk", o), entry("file", "lnk/pwned", "x")],
                                           "lnk/pwned", "lnk is a symlink"),
        "write through symlinked dir entry": ([entry("sym", "lnk", o), entry("dir", "lnk/sub")],
                                              "lnk/sub", "lnk is a symlink"),
        "composed symlinks": ([entry("sym", "s", "."), entry("sym", "l", "s/..")], "l",
                              "points outside"),
        "symlink escaping through a later link": (
            [entry("sym", "l", "x/.."), entry("sym", "x", ".")], "l", "through links extracted after"),
        "symlink loop": ([entry("sym", "a", "b/x"), entry("sym", "b", "a/y")], "b", "points outside"),
        "hardlink dotdot": ([entry("link", "h", "../outside/secret")], "h",
                            "hardlink target ../outside/secret contains '..'"),
        "hardlink absolute": ([entry("link", "h", o + "/secret")], "h", "is absolute"),
        "hardlink through symlink": ([entry("sym", "lnk", o), entry("link", "h", "lnk/secret")],
                                     "h", "lnk is a symlink"),
        "hardlink to missing": ([entry("link", "h", "nothere")], "h", "not in the archive before"),
        "device node": ([entry("dir", "dev"), entry("chr", "dev/null")], "dev/null",
                        "device node (use --allow-devices"),
        "reserved name": ([entry("file", IMPORT_TMP, "x")], IMPORT_TMP, "reserved"),
    }


CASES = sorted(escapes(Path("/x")))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dest_exists", [False, True])
def test_refuses_escaping_members(tmp_path: Path, outside: Path, case: str, dest_exists: bool) -> None:
    entries, member, reason = escapes(outside)[case]
    tarball = make_tar(tmp_path / "evil.tar", [entry("file", "fine", "ok")] + entries)
    dest = tmp_path / "dest"
    if dest_exists:
        dest.mkdir()
    with pytest.raises(UnsafeMember) as info:
        import_tarball(tarball, dest)
    msg = str(info.value)
    assert msg.startswith(f"rootfs import member={member}: "), msg
    assert reason in msg, msg
    assert "\n" not in msg
    # Nothing half-imported, nothing outside touched.
    if dest_exists:
        assert os.listdir(dest) == []
    else:
        assert not dest.exists()
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "host data\n"


def test_cli_names_the_member_in_one_line(cli: Cli, tmp_path: Path, outside: Path) -> None:
    tarball = make_tar(tmp_path / "evil.tar", [entry("sym", "lnk", str(outside)),
                                               entry("file", "lnk/pwned", "x")])
    assert_one_error_line(cli("rootfs", "import", tarball, tmp_path / "d"),
                          "rootfs import member=lnk/pwned: ")
    assert not (tmp_path / "d").exists() and not (outside / "pwned").exists()


def test_odd_member_names_stay_on_one_line(tmp_path: Path) -> None:
    tarball = make_tar(tmp_path / "evil.tar", [entry("file", "../a\nb", "x")])
    with pytest.raises(UnsafeMember) as info:
        import_tarball(tarball, tmp_path / "d")
    assert "member='../a\\nb'" in str(info.value) and "\n" not in str(info.value)


def test_refuses_a_non_empty_dest(tmp_path: Path) -> None:
    tarball = make_tar(tmp_path / "img.tar", GOOD)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(InvalidArgument, match="exists and is not empty"):
        import_tarball(tarball, dest)
    assert os.listdir(dest) == ["keep"]
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgument, match="not a directory"):
        import_tarball(tarball, tmp_path / "file")


def test_stale_import_tmp_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / IMPORT_TMP / "junk").mkdir(parents=True)
    import_tarball(make_tar(tmp_path / "img.tar", GOOD), dest)
    check_good(dest)


@pytest.mark.parametrize("content, needle", [
    (b"this is not a tar archive at all" * 40, "not a readable tar archive"),
    (b"", "not a readable tar archive"),
])
def test_garbage_input(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "bad.tar").write_bytes(content)
    with pytest.raises(InvalidArgument, match=needle):
        import_tarball(tmp_path / "bad.tar", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_truncated_archive_leaves_nothing(tmp_path: Path, cli: Cli) -> None:
    full = make_tar(tmp_path / "img.tar", GOOD + [entry("file", "big", b"z" * 100_000)]).read_bytes()
    (tmp_path / "cut.tar").write_bytes(full[: len(full) - 60_000])
    line = assert_one_error_line(cli("rootfs", "import", tmp_path / "cut.tar", tmp_path / "dest"))
    assert "member=big" in line
    assert not (tmp_path / "dest").exists()


def test_missing_tarball(cli: Cli, tmp_path: Path) -> None:
    assert_one_error_line(cli("rootfs", "import", tmp_path / "nope.tar", tmp_path / "dest"),
                          "rootfs import", "No such file or directory")
    assert not (tmp_path / "dest").exists()


def test_progress_bar_render() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out)
    bar(512 << 10, 2 << 20)
    assert out.getvalue().startswith("\rimporting [#######")
    assert "25%" in out.getvalue() and "512.0KiB / 2.0MiB" in out.getvalue()
    bar.last = 0
    bar(3 << 20, None)
    assert out.getvalue().split("\r")[-1].startswith("importing 3.0MiB")
    bar.close()
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()
    ProgressBar(stream=quiet).close()  # never drawn: prints nothing
    assert quiet.getvalue() == ""


def test_cli_shows_progress_only_on_a_tty(cli: Cli, tmp_path: Path) -> None:
    import pty
    tarball = make_tar(tmp_path / "img.tar", GOOD + [entry("file", "blob", os.urandom(1 << 20))])
    r = cli("rootfs", "import", tarball, tmp_path / "a")
    assert r.returncode == 0 and r.stderr == ""  # not a tty: no bar
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cli.argv("rootfs", "import", tarball, tmp_path / "b"), env=cli.env,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        proc.wait(timeout=60)
        chunks = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    assert proc.returncode == 0
    shown = b"".join(chunks).decode()
    assert "importing [##############################] 100%" in shown
    assert shown.endswith("\n")
