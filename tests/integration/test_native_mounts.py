"""Filesystem mounts with their data options, per-mount propagation and recursive
attributes, for real (#14 item 2): what the container sees in stat, df and
/proc/self/mountinfo."""

from __future__ import annotations

import os
from pathlib import Path

import helpers_native
import pytest
from helpers_native import Box

from execdriver.spec import Mount

native = helpers_native.native

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def _line(out: str, dest: str) -> str:
    """The mountinfo line of the mount at ``dest`` (the last one: the top of the stack)."""
    lines = [ln for ln in out.splitlines() if len(ln.split()) > 4 and ln.split()[4] == dest]
    assert lines, out
    return lines[-1]


def test_a_tmpfs_gets_its_size_mode_uid_and_gid(native: Box) -> None:
    spec = native.spec("stat -c '%a %u %g' /t; df -k /t | tail -1; grep ' /t ' /proc/self/mountinfo")
    spec.mounts.append(Mount(destination="/t", type="tmpfs", source="tmpfs",
                             options=["nosuid", "nodev", "mode=1750", "size=2m", "uid=12",
                                      "gid=34"]))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    lines = out.splitlines()
    assert lines[0] == "1750 12 34", out
    assert lines[1].split()[1] == "2048", out         # 1K-blocks
    assert "nosuid" in lines[2] and "nodev" in lines[2] and "size=2048k" in lines[2], out


def test_devpts_mqueue_and_proc_take_their_data_options(native: Box) -> None:
    spec = native.spec("grep -E ' /(dev/pts|p2) ' /proc/self/mountinfo")
    spec.mounts = [m for m in spec.mounts if m.destination != "/dev/pts"]
    spec.mounts.append(Mount(destination="/dev/pts", type="devpts", source="devpts",
                             options=["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                      "mode=0620", "gid=5"]))
    spec.mounts.append(Mount(destination="/p2", type="proc", source="proc",
                             options=["nosuid", "hidepid=2"]))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert "gid=5" in _line(out, "/dev/pts") and "mode=620" in _line(out, "/dev/pts"), out
    assert "hidepid=invisible" in _line(out, "/p2") or "hidepid=2" in _line(out, "/p2"), out


def test_an_overlay_mount_from_the_spec(native: Box, tmp_path: Path) -> None:
    lower1, lower2, upper, work = (tmp_path / n for n in ("l1", "l2", "up", "work"))
    for d in (lower1, lower2, upper, work):
        d.mkdir()
    (lower1 / "a").write_text("from l1\n")
    (lower2 / "a").write_text("hidden\n")
    (lower2 / "b").write_text("from l2\n")
    spec = native.spec("cat /o/a /o/b; echo new > /o/c")
    spec.mounts.append(Mount(destination="/o", type="overlay", source="overlay",
                             options=[f"lowerdir={lower1}:{lower2}", f"upperdir={upper}",
                                      f"workdir={work}"]))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert out.splitlines() == ["from l1", "from l2"]
    assert (upper / "c").read_text() == "new\n"


@pytest.mark.parametrize("option,tag", [
    ("rshared", "shared:"), ("rprivate", None), ("runbindable", "unbindable"),
])
def test_per_mount_propagation_shows_in_mountinfo(native: Box, tmp_path: Path, option: str,
                                                  tag: str | None) -> None:
    spec = native.spec("cat /proc/self/mountinfo")
    spec.mounts.append(Mount(destination="/b", source=str(tmp_path), options=["rbind", option]))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    optional = " ".join(_line(out, "/b").split(" - ")[0].split()[6:])
    if tag is None:
        assert optional == "", optional
    else:
        assert tag in optional, optional


def test_a_mount_s_propagation_wins_over_the_root_s(native: Box, tmp_path: Path) -> None:
    spec = native.spec("cat /proc/self/mountinfo")
    spec.root.propagation = "rshared"
    spec.mounts.append(Mount(destination="/b", source=str(tmp_path), options=["rbind", "rprivate"]))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert "shared:" in _line(out, "/").split(" - ")[0], out
    assert "shared:" not in _line(out, "/b").split(" - ")[0], out


def test_rro_makes_every_submount_of_a_bind_read_only(native: Box, tmp_path: Path) -> None:
    """ro on a bind is the top mount only; rro (mount_setattr, AT_RECURSIVE) the tree."""
    import subprocess
    (tmp_path / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp_path / "sub")], check=True)
    try:
        spec = native.spec("touch /b/sub/x 2>&1; grep ' /b/sub ' /proc/self/mountinfo")
        spec.mounts.append(Mount(destination="/b", source=str(tmp_path), options=["rbind", "rro"]))
        _status, out = native.run(spec)
        assert "Read-only file system" in out, out
        assert _line(out, "/b/sub").split()[5].startswith("ro"), out
        assert not os.path.exists(tmp_path / "sub" / "x")
    finally:
        subprocess.run(["umount", str(tmp_path / "sub")], check=True)


def test_tmpcopyup_starts_the_tmpfs_with_what_the_directory_held(native: Box,
                                                                 rootfs: Path) -> None:
    """runc's tmpcopyup (podman asks for it on --tmpfs): files, modes, owners, symlinks,
    subdirectories and device nodes of the image directory, on a writable tmpfs over a
    read-only root; the image itself is not changed."""
    d = rootfs / "seed"
    (d / "sub").mkdir(parents=True)
    (d / "file").write_text("seeded\n")
    (d / "file").chmod(0o640)
    os.chown(d / "file", 12, 34)
    (d / "sub" / "deep").write_text("deep\n")
    (d / "link").symlink_to("/etc/passwd")
    os.mkfifo(d / "fifo")
    spec = native.spec("cat /seed/file /seed/sub/deep; stat -c '%a %u %g' /seed/file; "
                       "readlink /seed/link; test -p /seed/fifo && echo fifo; "
                       "echo new > /seed/new && cat /seed/new; "
                       "grep ' /seed ' /proc/self/mountinfo | grep -c tmpfs", rootfs=rootfs)
    spec.root.readonly = True
    spec.mounts.append(Mount(destination="/seed", type="tmpfs", source="tmpfs",
                             options=["nosuid", "nodev", "tmpcopyup", "size=1m"]))
    status, out = native.run(spec)
    assert status.exit_code == 0, out
    assert out.splitlines() == ["seeded", "deep", "640 12 34", "/etc/passwd", "fifo", "new",
                                "1"], out
    assert not (d / "new").exists()                 # written to the tmpfs only


def test_tmpcopyup_is_a_tmpfs_option_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'tmpcopyup' is a tmpfs option"):
        Mount(destination="/b", type="bind", source=str(tmp_path), options=["rbind", "tmpcopyup"])
