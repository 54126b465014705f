"""rootfs import as root: device nodes with --allow-devices, ownership and setuid bits kept."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from execdriver.rootfs import UnsafeMember, import_tarball

pytestmark = pytest.mark.root


def tarball(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, extra in (("dev", tarfile.DIRTYPE, {}),
                                  ("dev/null", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}),
                                  ("dev/loop9", tarfile.BLKTYPE, {"devmajor": 7, "devminor": 9}),
                                  ("home/web/file", tarfile.REGTYPE, {"uid": 1000, "gid": 1001}),
                                  ("bin/su", tarfile.REGTYPE, {"uid": 0, "gid": 0, "mode": 0o4755}),
                                  ("home/web/link", tarfile.SYMTYPE, {"linkname": "file",
                                                                      "uid": 1000, "gid": 1001})):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
            for k, v in extra.items():
                setattr(info, k, v)
            data = b"content" if kind == tarfile.REGTYPE else None
            if data:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def test_devices_only_with_allow_devices(tmp_path: Path) -> None:
    src = tarball(tmp_path / "img.tar.gz")
    with pytest.raises(UnsafeMember, match="member=dev/null: device node"):
        import_tarball(src, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    import_tarball(src, tmp_path / "b", allow_devices=True)
    st = (tmp_path / "b/dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    st = (tmp_path / "b/dev/loop9").lstat()
    assert stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 9)


def test_ownership_and_setuid_are_kept(tmp_path: Path) -> None:
    import_tarball(tarball(tmp_path / "img.tar.gz"), tmp_path / "r", allow_devices=True)
    st = (tmp_path / "r/home/web/file").lstat()
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    st = (tmp_path / "r/home/web/link").lstat()
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE((tmp_path / "r/bin/su").stat().st_mode) == 0o4755


def test_cli_allow_devices(tmp_path: Path) -> None:
    import subprocess
    src = tarball(tmp_path / "img.tar.gz")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECDRIVER")}
    argv = [sys.executable, "-m", "execdriver", "rootfs", "import"]
    r = subprocess.run(argv + [str(src), str(tmp_path / "a")], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 125 and r.stderr.count("\n") == 1 and "--allow-devices" in r.stderr
    r = subprocess.run(argv + ["--allow-devices", str(src), str(tmp_path / "b")],
                       capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR((tmp_path / "b/dev/null").lstat().st_mode)
