"""Rootfs helpers: a minimal busybox rootfs from the host's busybox-static,
and unpacking an exported image tarball safely."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import InvalidArgument, StepFailed, step_error

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path):
            out = subprocess.run(["file", "-L", path], capture_output=True, text=True, check=False).stdout \
                if shutil.which("file") else "statically linked"
            if "dynamically" not in out:
                return path
    raise StepFailed("rootfs busybox", "no static busybox found (apt-get install busybox-static)")


def build_busybox(dest: str | os.PathLike[str]) -> Path:
    """Create a minimal rootfs at ``dest``: busybox, its applet links, /etc files."""
    busybox = find_busybox()
    root = Path(dest)
    if root.exists() and any(root.iterdir()) and not (root / "bin" / "busybox").exists():
        raise InvalidArgument(f"rootfs busybox dir={root}: exists and is not empty")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "home", "var/www", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/hostname").write_text("busybox\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    return root


# --- importing an exported image tarball ------------------------------------

IMPORT_TMP = ".import-tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40

Progress = Callable[[int, "int | None"], None]


@dataclass
class ImportReport:
    dest: Path
    members: int
    bytes_read: int


class UnsafeMember(InvalidArgument):
    """A tar member that would land outside the rootfs (or is not allowed)."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(f"rootfs import member={_show(name)}: {cause}", step="rootfs import")
        self.member = name


def _show(name: str) -> str:
    # Names come from the archive: keep the error on one line whatever they hold.
    return name if name and name.isprintable() and " " not in name else repr(name)


class _CountingReader:
    """A read-only file wrapper that reports how many bytes went through it."""

    def __init__(self, raw: IO[bytes], total: int | None, progress: Progress | None) -> None:
        self.raw, self.total, self.progress, self.count = raw, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        if self.progress is not None:
            self.progress(self.count, self.total)
        return data


def member_parts(name: str, member: str | None = None) -> list[str]:
    """Split a member name (or a hardlink target of ``member``) into path components;
    refuse names that could leave the root."""
    what = "path" if member is None else f"hardlink target {_show(name)}"
    if "\0" in name:
        raise UnsafeMember(member or name, f"{what} contains NUL")
    if name.startswith("/"):
        raise UnsafeMember(member or name, f"{what} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember(member or name, f"{what} contains '..'")
    return parts


def _open_dir(rootfd: int, parts: list[str], name: str, create: bool) -> int:
    """Open the directory ``parts`` under ``rootfd`` without following any symlink.

    Missing directories are created (0755) when ``create``: archives may omit
    parent entries. A component that is a symlink or not a directory is refused,
    so nothing is ever written through a link.
    """
    fd = os.dup(rootfd)
    try:
        for i, comp in enumerate(parts):
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise UnsafeMember(name, f"{'/'.join(parts[:i + 1])}: not in the archive "
                                             "before this member") from None
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeMember(name, f"{'/'.join(parts[:i + 1])} is a symlink or not a "
                                             "directory; refusing to go through it") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def link_escapes(rootfd: int, parts: list[str]) -> bool:
    """True if the symlink at ``parts`` resolves outside the tree under ``rootfd``.

    Resolution follows the links already extracted. An absolute target starts
    again at the tree's root (that is where it points inside the container); any
    ``..`` that would climb above the root counts as outside, so a host tool that
    follows the link can never leave the rootfs through it.
    """
    stack = list(parts[:-1])
    pending = _split_target(os.readlink("/".join(parts), dir_fd=rootfd), stack)
    budget = _MAX_LINKS
    while pending:
        comp = pending.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return True
            stack.pop()
            continue
        path = "/".join(stack + [comp])
        try:
            st = os.stat(path, dir_fd=rootfd, follow_symlinks=False)
        except OSError:
            stack.append(comp)  # dangling from here on: judge the rest lexically
            continue
        if stat.S_ISLNK(st.st_mode):
            budget -= 1
            if budget < 0:
                return True
            pending = _split_target(os.readlink(path, dir_fd=rootfd), stack) + pending
        else:
            stack.append(comp)
    return False


def _split_target(target: str, stack: list[str]) -> list[str]:
    if target.startswith("/"):
        stack.clear()
    return target.split("/")


def _remove_existing(pfd: int, base: str, name: str, is_dir: bool) -> bool:
    """Make room for a member (a later member replaces an earlier one, as in tar).

    Returns True if a directory already exists there and the member is one too.
    """
    try:
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if is_dir:
            return True
        try:
            os.rmdir(base, dir_fd=pfd)
        except OSError:
            raise UnsafeMember(name, "would replace a non-empty directory") from None
        return False
    os.unlink(base, dir_fd=pfd)
    return False


class _Extractor:
    def __init__(self, rootfd: int, allow_devices: bool) -> None:
        self.rootfd = rootfd
        self.allow_devices = allow_devices
        self.as_root = os.geteuid() == 0
        self.dirs: list[tuple[list[str], int, float, str]] = []
        self.links: list[tuple[list[str], str]] = []

    def extract(self, tar: Any, m: Any) -> None:
        parts = member_parts(m.name)
        if not parts:  # the archive's own root ("./"): DIR keeps its own mode
            return
        if len(parts) == 1 and parts[0] == IMPORT_TMP:
            raise UnsafeMember(m.name, f"name {IMPORT_TMP} is reserved for the import")
        if m.ischr() or m.isblk():
            if not self.allow_devices:
                raise UnsafeMember(m.name, "device node (use --allow-devices to import it)")
        elif not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise UnsafeMember(m.name, f"unsupported member type {m.type!r}")
        if m.islnk():
            link_parts = member_parts(m.linkname, m.name)
            if not link_parts:
                raise UnsafeMember(m.name, "hardlink to the archive root")
        pfd = _open_dir(self.rootfd, parts[:-1], m.name, create=True)
        try:
            self._create(tar, m, pfd, parts)
        finally:
            os.close(pfd)

    def _create(self, tar: Any, m: Any, pfd: int, parts: list[str]) -> None:
        base = parts[-1]
        mode = m.mode & 0o7777
        if _remove_existing(pfd, base, m.name, m.isdir()):
            self.dirs.append((parts, mode, m.mtime, m.name))
            return
        if m.isdir():
            os.mkdir(base, 0o700, dir_fd=pfd)  # real mode set at the end, after the contents
            if self.as_root:
                os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            self.dirs.append((parts, mode, m.mtime, m.name))
        elif m.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=pfd)
            try:
                src = tar.extractfile(m)
                with open(fd, "wb", closefd=False) as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                if self.as_root:
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)  # after chown, which clears setuid bits
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)
        elif m.issym():
            if "\0" in m.linkname or not m.linkname:
                raise UnsafeMember(m.name, "bad symlink target")
            os.symlink(m.linkname, base, dir_fd=pfd)
            if link_escapes(self.rootfd, parts):
                raise UnsafeMember(m.name, f"symlink to {_show(m.linkname)} points outside the rootfs")
            self.links.append((parts, m.name))
            self._owner_time(pfd, base, m)
        elif m.islnk():
            link_parts = member_parts(m.linkname, m.name)
            sfd = _open_dir(self.rootfd, link_parts[:-1], m.name, create=False)
            try:
                os.link(link_parts[-1], base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafeMember(m.name, f"hardlink target {_show(m.linkname)} is not in the "
                                           "archive before this member") from None
            except PermissionError:
                raise UnsafeMember(m.name, f"cannot hardlink to {_show(m.linkname)}") from None
            finally:
                os.close(sfd)
        else:  # fifo or an allowed device node
            kind = stat.S_IFIFO if m.isfifo() else stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            dev = 0 if m.isfifo() else os.makedev(m.devmajor, m.devminor)
            os.mknod(base, 0o600 | kind, dev, dir_fd=pfd)
            self._owner_time(pfd, base, m)
            os.chmod(base, mode, dir_fd=pfd)

    def _owner_time(self, pfd: int, base: str, m: Any) -> None:
        if self.as_root:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        # Links may only escape in combination with ones extracted after them.
        for parts, name in self.links:
            if link_escapes(self.rootfd, parts):
                raise UnsafeMember(name, "symlink points outside the rootfs "
                                         "(through links extracted after it)")
        # Deepest first, so a read-only parent never blocks its children.
        for parts, mode, mtime, name in sorted(self.dirs, key=lambda d: -len(d[0])):
            fd = _open_dir(self.rootfd, parts, name, create=False)
            try:
                os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def _rmtree(path: Path) -> None:
    """Remove a tree even if the archive made some of its directories read-only."""
    def fix(func: Any, p: str, _exc: Any) -> None:
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    if path.is_symlink() or path.exists():
        shutil.rmtree(path, onerror=fix)


def _prepare_dest(dest: Path) -> list[Path]:
    """Make sure ``dest`` is an empty directory; return the directories we created."""
    created: list[Path] = []
    missing = []
    p = dest
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    if not dest.is_dir():
        raise InvalidArgument(f"rootfs import dir={dest}: not a directory")
    leftover = [n for n in os.listdir(dest) if n != IMPORT_TMP]
    if leftover:
        raise InvalidArgument(f"rootfs import dir={dest}: exists and is not empty")
    return created


def import_tarball(source: str | os.PathLike[str] | IO[bytes], dest: str | os.PathLike[str], *,
                   allow_devices: bool = False, progress: Progress | None = None) -> ImportReport:
    """Unpack an exported image tarball (tar, tar.gz, tar.bz2, tar.xz) into ``dest``.

    ``source`` is a path, ``"-"`` for stdin, or a binary file object. ``dest``
    must be empty or missing. Members are unpacked into ``dest/.import-tmp``
    and moved into ``dest`` only when all went well; on any error ``dest`` is
    left as it was. Members that would escape ``dest`` (absolute names, ``..``,
    symlinks or hardlinks leading outside, writes through symlinks) and device
    nodes (unless ``allow_devices``) raise :class:`UnsafeMember` naming the member.
    ``progress(bytes_read, total_or_None)`` is called as the input is read.
    """
    dest = Path(dest).absolute()
    created = _prepare_dest(dest)
    tmp = dest / IMPORT_TMP
    label = "<stdin>" if source == "-" else getattr(source, "name", str(source))
    opened: IO[bytes] | None = None
    try:
        if source == "-":
            raw: IO[bytes] = sys.stdin.buffer
        elif isinstance(source, (str, os.PathLike)):
            try:
                raw = opened = open(source, "rb")  # noqa: SIM115 - closed in the finally below
            except OSError as exc:
                raise step_error("rootfs import", exc, file=source) from None
        else:
            raw = source
        total = _size_of(raw)
        reader = _CountingReader(raw, total, progress)
        _rmtree(tmp)  # left over by an import that was killed
        os.mkdir(tmp, 0o700)
        count = _unpack(reader, tmp, label, allow_devices)
        _move_entries(tmp, dest)
        return ImportReport(dest, count, reader.count)
    except BaseException:
        _rmtree(tmp)
        for d in reversed(created):
            _rmtree(d)
        raise
    finally:
        if opened is not None:
            opened.close()


def _size_of(raw: IO[bytes]) -> int | None:
    """The input's size when it is a regular file (None for pipes and stdin)."""
    try:
        st = os.fstat(raw.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _unpack(reader: _CountingReader, tmp: Path, label: str, allow_devices: bool) -> int:
    import tarfile

    rootfd = os.open(tmp, _DIR_FLAGS)
    extractor = _Extractor(rootfd, allow_devices)
    count = 0
    name = ""
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
            for m in tar:
                name = m.name
                extractor.extract(tar, m)
                count += 1
        extractor.finish()
    except (tarfile.TarError, EOFError) as exc:
        where = f" member={_show(name)}" if name else ""
        raise InvalidArgument(f"rootfs import file={label}{where}: not a readable tar archive: "
                              f"{exc}", step="rootfs import") from None
    except OSError as exc:
        if name:
            raise step_error("rootfs import", exc, member=_show(name)) from None
        raise step_error("rootfs import", exc, file=label) from None
    finally:
        os.close(rootfd)
    return count


def _move_entries(tmp: Path, dest: Path) -> None:
    """Move what was unpacked from ``tmp`` into ``dest``; undo the moves on failure."""
    moved: list[str] = []
    try:
        for entry in sorted(os.listdir(tmp)):
            os.rename(tmp / entry, dest / entry)
            moved.append(entry)
    except OSError as exc:
        for entry in moved:
            try:
                os.rename(dest / entry, tmp / entry)
            except OSError:
                _rmtree(dest / entry)
        raise step_error("rootfs import", exc, dir=dest) from None
    os.rmdir(tmp)
