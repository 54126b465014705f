"""Containers made by an unprivileged user (rootless), as runc and podman make them.

Such a container always has a user namespace of its own: container root is the
caller, and container ids from 1 up are the caller's first range in /etc/subuid and
/etc/subgid when it has one (mapped by newuidmap/newgidmap: kernel/idmap.py); a
spec's own maps are kept (the helpers check them). Everything else the namespace
owns (mounts, /proc, hostname, a netns with only lo) works as for root. What needs
the host's root is refused by name: a veth network, and cgroups unless a writable
(delegated) one is there; then the container runs without one, with a warning
(kernel/cgroups/none.py).
"""

from __future__ import annotations

import os

from ..config import Config, IDMapping, Namespace
from ..errors import InvalidArgument, StepFailed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import Resources
    from ..kernel.cgroups import CgroupManager

# network modes a user namespace can set up alone ("none": a netns with lo only)
NETWORK_MODES = ("none", "host", "slirp4netns", "container", "netns")


def active() -> bool:
    """Is this process making containers without root: not root, or root in a user
    namespace (rootless podman's; as runc decides)?"""
    from ..kernel.procstat import rootless
    return rootless()


def adapt(config: Config) -> Config:
    """``config`` as this unprivileged caller can run it, or InvalidArgument naming what
    needs root."""
    if config.network.mode not in NETWORK_MODES:
        raise InvalidArgument(f"network {config.network.mode!r}: a rootless container can "
                              f"only use {', '.join(NETWORK_MODES)} (a veth pair needs root)")
    if os.geteuid() == 0:
        return config                   # root in a user namespace: ours is the container's
    types = config.namespace_types()
    if "user" not in types:
        config = config.replace(namespaces=(*config.namespaces, Namespace(type="user")))
    if config.namespace_path("user") is None and not config.uid_mappings:
        import pwd
        try:
            name: str | None = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            name = None
        from ..kernel.idmap import default_maps
        uids, gids = default_maps(os.geteuid(), os.getegid(), name)
        config = config.replace(uid_mappings=tuple(IDMapping(*m) for m in uids),
                                gid_mappings=tuple(IDMapping(*m) for m in gids))
    return config


def cgroup_manager(cg: CgroupManager, resources: Resources,
                   warn: Callable[[str], None]) -> CgroupManager:
    """``cg`` if this user may make it (a delegated cgroup v2 subtree), else none: with a
    warning, or StepFailed when ``resources`` asks for a limit."""
    blocked = [b for b in map(_blocking_ancestor, cg.directories()) if b]
    if not blocked and cg.directories():
        return cg
    from ..kernel.cgroups.none import NoCgroupManager, requested_limits
    why = (f"{blocked[0]} is not writable by uid {os.geteuid()}" if blocked
           else "no cgroup mount")
    asked = requested_limits(resources)
    if asked:
        raise StepFailed("cgroup", f"rootless: cannot apply {', '.join(asked)}: no cgroup "
                         f"can be made ({why})")
    warn(f"rootless: no cgroup ({why}): the container runs without limits, pause or stats")
    return NoCgroupManager(cg.name, why)


def _blocking_ancestor(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` (itself if it exists) when it is not
    writable and searchable by us (so we cannot make ``path``), else None."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return path
        path = parent
    return None if os.access(path, os.W_OK | os.X_OK) else path


def unavailable() -> str | None:
    """Why an unprivileged user cannot make user namespaces on this host (the sysctls
    that forbid it), or None."""
    checks = (("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces is 0"),
              ("/proc/sys/kernel/unprivileged_userns_clone", "0",
               "kernel.unprivileged_userns_clone is 0"),
              ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
               "kernel.apparmor_restrict_unprivileged_userns is 1"))
    for path, refused, why in checks:
        try:
            with open(path, encoding="ascii") as f:
                value = f.read().strip()
        except OSError:
            continue
        if value == refused:
            return f"this host forbids unprivileged user namespaces ({why})"
    if not os.path.exists("/proc/self/ns/user"):
        return "this kernel has no user namespaces"
    return None
