"""What /proc tells of a process, read without imports beyond os: what it is and since
when (/proc/<pid>/stat), and whether it runs rootless (/proc/self/uid_map)."""

from __future__ import annotations


def stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after comm (state first); [] if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return []
    # comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def pid_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of stat)."""
    try:
        return int(stat_fields(pid)[19])
    except (IndexError, ValueError):
        return None


def pid_namespace_members(init_pid: int) -> list[int]:
    """The host pids of every process in the pid namespace whose first process is
    ``init_pid`` (a container without a cgroup: kernel/cgroups/none.py), or just
    ``init_pid`` when it shares its parent's pid namespace; [] once it is gone."""
    import os
    try:
        ns = os.stat(f"/proc/{init_pid}/ns/pid")
        own = os.stat("/proc/self/ns/pid")
    except OSError:
        return []
    if (ns.st_dev, ns.st_ino) == (own.st_dev, own.st_ino):
        return [init_pid]
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{name}/ns/pid")
        except OSError:
            continue                    # gone, or not ours to look at
        if (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino):
            members.append(int(name))
    return sorted(members)


def running_in_userns() -> bool:
    """Is this process in a user namespace other than the host's (its uid_map is not
    the identity map of every id)? Rootless podman runs its runtime as root there."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def rootless() -> bool:
    """Does this process lack the host's root: not root, or root in a user namespace
    (runc's rule)? Then no cgroup outside a delegated subtree, no BPF device filter, no
    AppArmor profile loading."""
    import os
    return os.geteuid() != 0 or running_in_userns()
