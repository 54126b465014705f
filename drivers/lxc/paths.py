"""Container paths resolved inside the rootfs, never by following host paths.

One resolver (:func:`resolve_in_root`) serves the working directory and the mount
targets. It walks a path as a chroot would: symlinks are read in the container's view
(:func:`layered_readlink`: in a bind mount's source, in the rootfs elsewhere, not at all
in a file system made at start), an absolute target restarts at the container's root and
``..`` stops there.

- The cwd (CVE-2024-21626): liblxc's init chdir()s while it holds host directories, so
  :func:`cwd_problem` refuses, before anything exists, a cwd that goes through /proc and
  its kin; the start-host hook of translate.cwd_check_hook checks the chdir itself.
- Mount targets (CVE-2021-30465 and kin): liblxc's ``create=dir``/``create=file`` make
  the target with mkdir -p on the host path ``<rootfs>/<target>``, following the image's
  symlinks to the host before its mount refuses the link. So :func:`mount_targets`
  resolves each destination in the rootfs, :func:`make_targets` creates it there itself
  (openat2 RESOLVE_IN_ROOT, as the native driver does), and liblxc gets the resolved path,
  without ``create=``, mounting it only if no component is a symlink (``safe_mount``).
  Only inside a tmpfs the spec mounts (empty, made at start) liblxc still creates the
  target. What cannot be resolved or made is refused naming the mount; so is any mount
  but procfs over /proc (CVE-2019-16884, CVE-2019-19921).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from execdriver.spec import Mount, Spec

Readlink = Callable[[str], "str | None"]

# Under these a path can be a magic link to a descriptor of whoever does the chdir: liblxc's
# init still holds host directories then (CVE-2024-21626). liblxc makes the /dev links.
PROC_LIKE = ("/proc", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")
MAX_SYMLINKS = 40


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def binding(m: Mount) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def rel(path: str) -> str:
    """A container path as LXC's rootfs-relative mount target."""
    return os.path.normpath(path).lstrip("/")


def resolve_in_root(path: str, readlink: Readlink) -> str | None:
    """``path`` with its symlinks resolved as inside a chroot: ``readlink(p)`` reads the
    container path ``p`` (None: not a link); an absolute target restarts at the container's
    root and ``..`` stops there. Each path read is one the walk went through. None: too
    many links (ELOOP)."""
    done: list[str] = []
    todo = path.split("/")[::-1]
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        target = readlink("/" + "/".join([*done, part]))
        if target is None:
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            return None
        if target.startswith("/"):
            done = []
        todo += target.split("/")[::-1]
    return "/" + "/".join(done)


# A spec mount where it lands: (its destination resolved in the rootfs, the mount).
Layer = tuple[str, Mount]


def covering(path: str, layers: Sequence[Layer]) -> Layer | None:
    """The mount ``path`` is in at start (the last one over it hides the others)."""
    for layer in reversed(layers):
        if under(path, layer[0]):
            return layer
    return None


def layered_readlink(root: str, layers: Sequence[Layer], readlink: Readlink) -> Readlink:
    """readlink of a container path as it will be at start: in a bind mount's source, in
    the rootfs elsewhere, never in another mount (its contents are made at start).
    ``readlink`` reads a host path (it never follows the last component)."""
    def read(path: str) -> str | None:
        layer = covering(path, layers)
        if layer is not None:
            dest, m = layer
            if path == dest or not binding(m) or not m.source:
                return None
            return readlink(os.path.join(m.source, os.path.relpath(path, dest)))
        return readlink(os.path.join(root, path.lstrip("/")))
    return read


# --- mount targets --------------------------------------------------------------

@dataclass(frozen=True)
class MountTarget:
    """Where a spec mount goes, and who makes its target.

    ``path``: the destination resolved in the rootfs (no symlink in it when resolved).
    ``base``/``sub``: the host directory (the rootfs or a bind mount's source) the driver
    creates ``sub`` in, None when it does not: inside a tmpfs the spec mounts
    (``liblxc_creates``: the target is made by liblxc there, in a file system empty at
    start), inside another file system made at start (procfs, sysfs...: it must exist),
    or on an earlier mount's root.
    """

    path: str
    base: str | None = None
    sub: str = ""
    liblxc_creates: bool = False


def mount_problem(i: int, m: Mount, cause: str) -> str:
    """One line naming the mount (as ``mount DEST key=value: cause``)."""
    return f"mount {m.destination} mounts[{i}].destination={m.destination}: {cause}"


def _leads(m: Mount, path: str) -> str:
    if os.path.normpath(m.destination) == path:
        return ""
    return f"leads (symlinks resolved in the rootfs) to {path}, "


def _target(i: int, m: Mount, path: str | None, layers: Sequence[Layer], root: str
            ) -> MountTarget | str:
    if path is None:
        return mount_problem(i, m, "too many levels of symbolic links in the rootfs")
    if path == "/":
        return mount_problem(i, m, f"{_leads(m, path)}LXC cannot mount over the root")
    if path == "/proc" and m.type != "proc":
        return mount_problem(i, m, f"{_leads(m, path)}only procfs may be mounted at /proc "
                             "(a volume there would stand in for it)")
    if m.type in ("cgroup", "cgroup2") and path != "/sys/fs/cgroup":
        return mount_problem(i, m, f"{_leads(m, path)}LXC mounts cgroups only at /sys/fs/cgroup")
    layer = covering(path, layers)
    if layer is None:
        return MountTarget(path, root, path.lstrip("/"))
    dest, below = layer
    if dest == path:
        return MountTarget(path)                    # on an earlier mount's root
    if binding(below) and below.source:
        return MountTarget(path, below.source, os.path.relpath(path, dest))
    return MountTarget(path, liblxc_creates=below.type == "tmpfs")


def mount_targets(spec: Spec, readlink: Readlink) -> tuple[list[MountTarget], list[str]]:
    """Each spec mount's target (in order), and why those that cannot be made are refused.
    A destination is resolved through the mounts before it (``readlink``: of a host path,
    see :func:`layered_readlink`)."""
    targets: list[MountTarget] = []
    problems: list[str] = []
    layers: list[Layer] = []
    for i, m in enumerate(spec.mounts):
        path = resolve_in_root(m.destination, layered_readlink(spec.root.path, layers, readlink))
        target = _target(i, m, path, layers, spec.root.path)
        if isinstance(target, str):
            problems.append(target)
            target = MountTarget(os.path.normpath(m.destination))   # (refused before use)
        targets.append(target)
        layers.append((target.path, m))
    return targets, problems


def mount_layers(spec: Spec, readlink: Readlink) -> list[Layer]:
    """Every spec mount with its resolved destination."""
    return [(t.path, m) for t, m in zip(mount_targets(spec, readlink)[0], spec.mounts, strict=True)]


def target_is_dir(m: Mount, source_is_dir: Callable[[str], bool]) -> bool:
    """A bind mount of a file needs a file to mount on; anything else a directory."""
    return not binding(m) or source_is_dir(m.source or "")


def make_targets(spec: Spec, targets: Sequence[MountTarget],
                 source_is_dir: Callable[[str], bool] = os.path.isdir) -> tuple[int, str] | None:
    """Create the targets the driver makes, each inside its base (the rootfs or a bind
    source) with openat2(RESOLVE_IN_ROOT): nothing is made outside it, whatever changed
    since the targets were resolved (then liblxc refuses the symlink). Returns the index
    of a mount whose target could not be made and why, or None."""
    from execdriver.host import make_target
    for i, (m, t) in enumerate(zip(spec.mounts, targets, strict=True)):
        if t.base is None:
            continue
        where = "the rootfs" if t.base == spec.root.path else t.base
        try:
            base = os.open(t.base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if t.base == spec.root.path:
                return None         # liblxc says what is wrong with the rootfs, naming it
            return i, f"cannot open {where}: {exc.strerror}"
        try:
            os.close(make_target(base, t.sub, target_is_dir(m, source_is_dir)))
        except OSError as exc:
            return i, f"cannot make the target {t.path} in {where}: {exc.strerror}"
        finally:
            os.close(base)
    return None


def mount_in_reason(reason: str, spec: Spec, targets: Sequence[MountTarget]) -> int | None:
    """The spec mount liblxc's failure ``reason`` is about, if it names one's target (as
    ``<rootfs mount>/<target>``, e.g. when it refuses a symlink in it): the last one, as
    liblxc stops at the first failure."""
    found = None
    for i, (m, t) in enumerate(zip(spec.mounts, targets, strict=True)):
        for path in {t.path, os.path.normpath(m.destination)}:
            where = f"/rootfs/{rel(path)}"
            at = reason.find(where)
            while at >= 0:
                end = at + len(where)
                if end == len(reason) or reason[end] in '"\' !;:':
                    found = i
                    break
                at = reason.find(where, end)
    return found


def resolve_paths(paths: Sequence[str], spec: Spec, readlink: Readlink) -> list[str]:
    """Masked or read-only paths resolved in the rootfs (as written when that fails: then
    liblxc refuses the symlink)."""
    read = layered_readlink(spec.root.path, mount_layers(spec, readlink), readlink)
    return [resolve_in_root(p, read) or os.path.normpath(p) for p in paths]


# --- the working directory ------------------------------------------------------

def proc_area(path: str, layers: Sequence[Layer]) -> str | None:
    """The proc-like place ``path`` is in: see PROC_LIKE, a proc mount of the spec, or a
    bind mount of the host's (``-v /proc:/x``, ``-v /:/host`` then /host/proc)."""
    for top in PROC_LIKE:
        if under(path, top):
            return top
    for dest, m in layers:
        if not under(path, dest):
            continue
        if m.type == "proc":
            return dest
        if binding(m) and m.source:
            on_host = os.path.normpath(os.path.join(m.source, os.path.relpath(path, dest)))
            if any(under(on_host, top) for top in PROC_LIKE):
                return dest
    return None


def container_readlink(spec: Spec, readlink: Readlink) -> Readlink:
    """readlink of a container path as it will be at start (see :func:`layered_readlink`),
    the spec's mounts where their destinations resolve to."""
    return layered_readlink(spec.root.path, mount_layers(spec, readlink), readlink)


def _walk(path: str, lookup: Readlink, layers: Sequence[Layer]) -> tuple[str | None, list[str]]:
    """resolve_in_root, never reading inside a proc-like place; and every path walked."""
    walked: list[str] = []

    def read(p: str) -> str | None:
        walked.append(p)
        return None if proc_area(p, layers) else lookup(p)
    return resolve_in_root(path, read), walked


def cwd_problem(spec: Spec, readlink: Readlink, cwd: str | None = None) -> str | None:
    """Why ``cwd`` (default: process.cwd) must not be chdir()ed to, or None.

    Refused: a path that goes, as written or through a symlink resolved in the rootfs
    (never by following host paths), through a proc-like place: there a descriptor link
    leads out of the container. Anything else resolves inside the root."""
    cwd = spec.process.cwd if cwd is None else cwd
    where = f"process.cwd={cwd}"
    layers = mount_layers(spec, readlink)
    container = layered_readlink(spec.root.path, layers, readlink)
    for as_written, lookup in ((True, lambda _p: None), (False, container)):
        resolved, walked = _walk(cwd, lookup, layers)
        if resolved is None:
            return f"{where}: too many levels of symbolic links in the rootfs"
        for path in walked:
            top = proc_area(path, layers)
            if top is not None:
                shown = resolved if proc_area(resolved, layers) else path
                how = "is" if as_written else \
                    f"leads (symlinks resolved in the rootfs) to {shown}, which is"
                return (f"{where}: {how} under {top}, where a descriptor link can lead out of "
                        "the container")
    return None
