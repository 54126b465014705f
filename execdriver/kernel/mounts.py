"""Mount options, secure in-root mounting, masked and read-only paths.

Mount targets are resolved inside the rootfs with openat2(RESOLVE_IN_ROOT)
and the mount is made onto ``/proc/self/fd/N``: a symlink in the image can
never lead a mount out of the rootfs (CVE-2021-30465 and kin).

The functions that touch the kernel take the syscalls seam (``syscalls=``,
the libc one by default; see syscalls.Syscalls).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from . import syscalls as sc
from .record import field, record
from .syscalls import Syscalls

_FLAGS = {
    "ro": (sc.MS_RDONLY, True), "rw": (sc.MS_RDONLY, False),
    "nosuid": (sc.MS_NOSUID, True), "suid": (sc.MS_NOSUID, False),
    "nodev": (sc.MS_NODEV, True), "dev": (sc.MS_NODEV, False),
    "noexec": (sc.MS_NOEXEC, True), "exec": (sc.MS_NOEXEC, False),
    "sync": (sc.MS_SYNCHRONOUS, True), "async": (sc.MS_SYNCHRONOUS, False),
    "dirsync": (sc.MS_DIRSYNC, True), "remount": (sc.MS_REMOUNT, True),
    "mand": (sc.MS_MANDLOCK, True), "nomand": (sc.MS_MANDLOCK, False),
    "atime": (sc.MS_NOATIME, False), "noatime": (sc.MS_NOATIME, True),
    "diratime": (sc.MS_NODIRATIME, False), "nodiratime": (sc.MS_NODIRATIME, True),
    "bind": (sc.MS_BIND, True), "rbind": (sc.MS_BIND | sc.MS_REC, True),
    "relatime": (sc.MS_RELATIME, True), "norelatime": (sc.MS_RELATIME, False),
    "strictatime": (sc.MS_STRICTATIME, True), "nostrictatime": (sc.MS_STRICTATIME, False),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, True),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# Recursive attributes, set with mount_setattr(AT_RECURSIVE) on the whole tree after the
# mount (runc's rro, rnosuid, ...): (attributes to set, attributes to clear).
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
MOUNT_ATTR__ATIME, MOUNT_ATTR_RELATIME, MOUNT_ATTR_NOATIME = 0x70, 0x0, 0x10
MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOSYMFOLLOW = 0x20, 0x80, 0x200000
_RECURSIVE = {
    "rro": (MOUNT_ATTR_RDONLY, 0), "rrw": (0, MOUNT_ATTR_RDONLY),
    "rnosuid": (MOUNT_ATTR_NOSUID, 0), "rsuid": (0, MOUNT_ATTR_NOSUID),
    "rnodev": (MOUNT_ATTR_NODEV, 0), "rdev": (0, MOUNT_ATTR_NODEV),
    "rnoexec": (MOUNT_ATTR_NOEXEC, 0), "rexec": (0, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, MOUNT_ATTR_NOSYMFOLLOW),
    "rrelatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rnoatime": (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    "rstrictatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
}
# Options of the runtime-spec's vocabulary this runtime does not implement.
UNSUPPORTED_OPTIONS = frozenset({
    "ratime", "rnorelatime", "rnostrictatime", "idmap", "ridmap", "copy-symlink",
    "acl", "noacl"})
#: every option that is a kernel flag, a propagation or a recursive attribute (not fs data)
KNOWN_OPTIONS = frozenset(_FLAGS) | frozenset(_PROPAGATION) | frozenset(_RECURSIVE)
PROC_SUPER_MAGIC = 0x9FA0


def option_problems(fstype: str, options: Sequence[str]) -> list[str]:
    """What is wrong with a mount's options: one unsupported by this runtime, or fs data
    on a bind mount (the kernel would drop it silently). Other types take their data."""
    is_bind = fstype == "bind" or "bind" in options or "rbind" in options
    out = []
    for opt in options:
        if opt in UNSUPPORTED_OPTIONS:
            out.append(f"{opt!r} is not supported")
        elif opt == "tmpcopyup" and (is_bind or fstype != "tmpfs"):
            out.append("'tmpcopyup' is a tmpfs option")
        elif is_bind and opt not in KNOWN_OPTIONS:
            out.append(f"{opt!r} is not a bind mount option")
    return out


def propagation_flags(name: str) -> int:
    """MS_* flags of a propagation name (private, rslave, ...); KeyError if none."""
    return _PROPAGATION[name]
LIBC = sc.LIBC

@record
class MountPlan:
    """A spec mount, parsed in the parent; executed by the init."""

    destination: str
    fstype: str
    source: str | None
    flags: int
    data: str
    propagation: list[int] = field(default_factory=list)
    attr_set: int = 0               # recursive attributes (mount_setattr, AT_RECURSIVE)
    attr_clr: int = 0
    copy_up: bool = False           # tmpcopyup: the tmpfs starts with the directory's contents

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def plan_mount(destination: str, fstype: str, source: str | None, options: Sequence[str]) -> MountPlan:
    """Split the options as runc's parseMountOptions does: kernel flags, propagation
    (applied after the mount), recursive attributes (after that), and the rest: the
    filesystem's data (``mode=755,size=64k``, ``lowerdir=...``)."""
    plan = MountPlan(destination, "" if fstype == "bind" else fstype, source,
                     sc.MS_BIND if fstype == "bind" else 0, "")
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            bit, on = _FLAGS[opt]
            plan.flags = (plan.flags | bit) if on else (plan.flags & ~bit)
        elif opt in _PROPAGATION:
            plan.propagation.append(_PROPAGATION[opt])
        elif opt in _RECURSIVE:
            set_, clr = _RECURSIVE[opt]
            plan.attr_set = (plan.attr_set & ~clr) | set_
            plan.attr_clr = (plan.attr_clr & ~set_) | clr
        elif opt == "tmpcopyup":
            plan.copy_up = True
        else:
            data.append(opt)
    plan.data = ",".join(data)
    return plan


# --- in-root resolution -------------------------------------------------

def open_in_root(root_fd: int, path: str, flags: int = sc.O_PATH,
                 syscalls: Syscalls = LIBC) -> int:
    """Open ``path`` as seen from inside the rootfs (symlinks resolved in the root)."""
    return syscalls.openat2(root_fd, path.lstrip("/") or ".", flags,
                            sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)


def mkdir_in_root(root_fd: int, path: str, mode: int = 0o755, syscalls: Syscalls = LIBC) -> None:
    """mkdir -p inside the rootfs, each component resolved in the root."""
    parts = [p for p in path.split("/") if p]
    cur = ""
    for part in parts:
        cur = f"{cur}/{part}"
        try:
            fd = open_in_root(root_fd, cur, syscalls=syscalls)
            syscalls.close(fd)
            continue
        except FileNotFoundError:
            pass
        parent = open_in_root(root_fd, cur.rsplit("/", 1)[0] or "/", syscalls=syscalls)
        try:
            syscalls.mkdir(part, mode, dir_fd=parent)
        except FileExistsError:
            pass
        finally:
            syscalls.close(parent)


def create_file_in_root(root_fd: int, path: str, syscalls: Syscalls = LIBC) -> None:
    parent_path, _, name = path.rstrip("/").rpartition("/")
    mkdir_in_root(root_fd, parent_path or "/", syscalls=syscalls)
    parent = open_in_root(root_fd, parent_path or "/", syscalls=syscalls)
    try:
        fd = syscalls.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                           dir_fd=parent)
        syscalls.close(fd)
    except FileExistsError:
        pass
    finally:
        syscalls.close(parent)


def make_target(root_fd: int, dest: str, source_is_dir: bool, syscalls: Syscalls = LIBC) -> int:
    """Create the mount target inside the root if missing; return an O_PATH fd on it."""
    try:
        return open_in_root(root_fd, dest, syscalls=syscalls)
    except FileNotFoundError:
        pass
    if source_is_dir:
        mkdir_in_root(root_fd, dest, syscalls=syscalls)
    else:
        create_file_in_root(root_fd, dest, syscalls=syscalls)
    return open_in_root(root_fd, dest, syscalls=syscalls)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def mount_in_root(root_fd: int, m: MountPlan, syscalls: Syscalls = LIBC) -> None:
    """Perform one spec mount onto its target resolved inside the rootfs."""
    source_is_dir = True
    if m.is_bind:
        assert m.source
        source_is_dir = syscalls.isdir(m.source)
    target = make_target(root_fd, m.destination, source_is_dir, syscalls)
    try:
        tpath = fd_path(target)
        if m.is_bind:
            syscalls.mount(m.source, tpath, None, m.flags & (sc.MS_BIND | sc.MS_REC))
            # Bind mounts ignore other flags on creation: apply them by remount.
            extra = m.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
            if extra:
                # Reopen: the target fd refers to the dentry under the new mount now.
                syscalls.close(target)
                target = open_in_root(root_fd, m.destination, syscalls=syscalls)
                tpath = fd_path(target)
                syscalls.mount(None, tpath, None, sc.MS_BIND | sc.MS_REMOUNT | extra)
        else:
            below = (syscalls.open(tpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                     if m.copy_up else -1)
            try:
                syscalls.mount(m.source or m.fstype, tpath, m.fstype, m.flags, m.data or None)
                if below >= 0:
                    syscalls.close(target)
                    target = open_in_root(root_fd, m.destination, syscalls=syscalls)
                    copy_up(below, fd_path(target))
            finally:
                if below >= 0:
                    syscalls.close(below)
        for prop in m.propagation:
            syscalls.close(target)
            target = open_in_root(root_fd, m.destination, syscalls=syscalls)
            syscalls.mount(None, fd_path(target), None, prop)
        if m.attr_set or m.attr_clr:
            syscalls.close(target)
            target = open_in_root(root_fd, m.destination, syscalls=syscalls)
            try:
                syscalls.mount_setattr(target, m.attr_set, m.attr_clr)
            except OSError as exc:
                if exc.errno == errno.ENOSYS:   # Linux < 5.12
                    raise OSError(errno.ENOSYS, "recursive mount options (rro, rnosuid, ...) "
                                  "need mount_setattr (Linux 5.12)", m.destination) from None
                raise
    finally:
        syscalls.close(target)


def copy_up(below_fd: int, into: str) -> None:
    """tmpcopyup (runc's): copy what the directory held before the tmpfs covered it (read
    through ``below_fd``, opened before the mount) into the new tmpfs, with modes, owners
    and times; symlinks are copied as links, never followed."""
    import shutil

    def owner(src: str, dst: str) -> None:
        st = os.lstat(src)
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    src = fd_path(below_fd)
    shutil.copystat(src, into)
    owner(src, into)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = os.path.normpath(os.path.join(into, rel))
        for name in dirnames + filenames:
            s, d = os.path.join(dirpath, name), os.path.join(target_dir, name)
            if os.path.islink(s):
                os.symlink(os.readlink(s), d)
            elif os.path.isdir(s):
                os.mkdir(d)
                shutil.copystat(s, d)
            elif stat.S_ISREG(os.lstat(s).st_mode):
                shutil.copy2(s, d, follow_symlinks=False)
            else:
                st = os.lstat(s)
                if stat.S_ISSOCK(st.st_mode):
                    continue                    # (a socket is not content)
                os.mknod(d, st.st_mode, st.st_rdev)     # device nodes and fifos as they are
            owner(s, d)
        for name in dirnames:       # (os.walk does not follow links; a dir's times last)
            s = os.path.join(dirpath, name)
            if not os.path.islink(s):
                shutil.copystat(s, os.path.join(target_dir, name))


def is_procfs(path: str, syscalls: Syscalls = LIBC) -> bool:
    """True if ``path`` lives on a real procfs (CVE-2019-16884: /proc must be proc)."""
    return syscalls.statfs_type(path) == PROC_SUPER_MAGIC


# --- after pivot_root ----------------------------------------------------

def mask_path(path: str, syscalls: Syscalls = LIBC) -> None:
    """Hide a path: /dev/null over a file, an empty read-only tmpfs over a dir."""
    try:
        st = syscalls.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        syscalls.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, "size=0k,mode=000")
    else:
        try:
            syscalls.mount("/dev/null", path, None, sc.MS_BIND)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise


def readonly_path(path: str, syscalls: Syscalls = LIBC) -> None:
    try:
        syscalls.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except FileNotFoundError:
        return
    syscalls.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
                   | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def pivot_into(root: str, syscalls: Syscalls = LIBC) -> None:
    """pivot_root(".", ".") then detach the old root: no put_old dir needed."""
    syscalls.chdir(root)
    syscalls.pivot_root(".", ".")
    # Make the old root a slave first so the detach does not propagate to the host.
    syscalls.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
    syscalls.umount2(".", sc.MNT_DETACH)
    syscalls.chdir("/")


def move_into(root: str, syscalls: Syscalls = LIBC) -> None:
    """The no-pivot fallback (rootfs on ramfs/initramfs): MS_MOVE onto / and chroot."""
    syscalls.chdir(root)
    syscalls.mount(root, "/", None, sc.MS_MOVE)
    syscalls.chroot(".")
    syscalls.chdir("/")
