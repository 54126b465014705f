"""The container side of the native process model (runs after fork).

``stage1`` runs in a child of the runtime: it joins the cgroup, creates the
namespaces (the user namespace first, waiting for the parent to write the
maps), forks the container init, reports its pid, and then stays as the
monitor that reaps the init and records its exit status.

``container_init`` is pid 1 of the new pid namespace: it waits for the
parent's "continue", builds the rootfs, pivots into it, and finally drops
privileges and execs the user's command (see ``finish_process``).

When the seccomp profile may keep the init from reporting a failure (see
seccomp.silent_failure_risk), stage-1 watches for the init's exec or death
(sync.watch_exec) and lets the parent look before it reaps the init.

With ``InitConfig.pause_before_pivot`` the init stops once the rootfs mounts
are made, before pivot_root, and waits for the parent (it runs the OCI
createContainer hooks in the container's mount namespace): see sync.py.

Nothing here may return into the runtime's code: every path ends in
``_exit``. Errors go back to the parent as sync "error" messages.

Every kernel operation goes through the syscalls seam (``syscalls=``, the
libc one by default; see syscalls.Syscalls), so that the unit tests follow
these sequences with a recording fake, without root.

Everything it needs is imported at module level: after pivot_root the
host's Python library is out of reach.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import os
import signal
import socket
import struct
import termios

from . import apparmor, capabilities, devices, mounts, rlimits, sync
from . import syscalls as sc
from .initconfig import InitConfig, ProcessConfig
from .syscalls import Syscalls

EXIT_SETUP_FAILED = 126
# config.RootMode's values (InitConfig.root_mode): not the enum, so that neither this
# module nor an unpickled InitConfig (forkserver.py) needs the Config module
PIVOT, MOVE, CHROOT = "pivot", "move", "chroot"
CATCHABLE_SIGNALS = sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
LIBC = sc.LIBC
TIOCSPTLCK, TIOCGPTN = 0x40045431, 0x80045430


def _write(path: str, data: str, syscalls: Syscalls = LIBC) -> None:
    fd = syscalls.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        syscalls.write(fd, data.encode())
    finally:
        syscalls.close(fd)


def setup_stdio(fds: tuple[int, int, int], syscalls: Syscalls = LIBC) -> None:
    for target, fd in enumerate(fds):
        if fd != target:
            syscalls.dup2(fd, target, inheritable=True)
        else:
            syscalls.set_inheritable(target, True)


def reset_signals() -> None:
    """Every catchable signal to SIG_DFL, none blocked, faulthandler off.

    A forked copy of the runtime inherits the embedding program's handlers and
    mask: faulthandler's SIGSEGV handler, for one, spins forever in a child that
    faults. Ignored signals survive execve, so SIG_IGN (Python ignores SIGPIPE
    and SIGXFSZ) is reset too.
    """
    if faulthandler.is_enabled():
        faulthandler.disable()
    for sig in CATCHABLE_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass        # the few the C library reserves
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def watches_exec(p: ProcessConfig) -> bool:
    """Whether the process's seccomp profile may keep it from reporting a failure."""
    return getattr(p.seccomp_filter, "risk", None) is not None


def open_exit_file(path: str, syscalls: Syscalls = LIBC) -> int:
    """Open the exit-status file now, as host root: after a user namespace is
    created the monitor can no longer create files in the state directory."""
    return syscalls.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def write_exit(fd: int, status: int, syscalls: Syscalls = LIBC) -> None:
    # One small write(2): readers see all of it or an empty file ("no status yet").
    syscalls.write(fd, json.dumps({"wait_status": status}).encode())
    syscalls.fsync(fd)
    syscalls.close(fd)


def cgroupns_after_join(cfg: InitConfig) -> int:
    """CLONE_NEWCGROUP if the init makes its cgroup namespace once the runtime has put
    it in the container's cgroups (so that the namespace is rooted there), else 0."""
    later = cfg.cgroup_procs or cfg.cgroup_placed_later
    return sc.CLONE_NEWCGROUP if later and cfg.unshare_flags & sc.CLONE_NEWCGROUP else 0


def stage1(cfg: InitConfig, sock: socket.socket, stdio: tuple[int, int, int],
           syscalls: Syscalls = LIBC) -> None:
    """Child of the runtime. Never returns."""
    step = "stage1"
    try:
        syscalls.set_dumpable(False)
        if cfg.detach:
            # Double fork: the monitor must not be the caller's child, so it
            # outlives the CLI and leaves no zombie in an embedding program.
            syscalls.setsid()
            if syscalls.fork() != 0:
                syscalls._exit(0)
        else:
            syscalls.set_pdeathsig(signal.SIGKILL)
        # Restore default signal handling: the runtime's handlers are not ours.
        reset_signals()
        setup_stdio(stdio, syscalls)
        exit_fd = open_exit_file(cfg.exit_file, syscalls) if cfg.exit_file else -1
        # Likewise the exec fifo: opened (O_PATH) while we are still host root.
        fifo_fd = (syscalls.open(cfg.exec_fifo, sc.O_PATH | os.O_CLOEXEC) if cfg.exec_fifo
                   else -1)
        if cfg.join_mount:
            # Opened now, as host root in the host's namespaces; the init joins it.
            step = "namespace mount"
            cfg.join_mount_fd = syscalls.open(cfg.join_mount, os.O_RDONLY | os.O_CLOEXEC)
        step = "namespace join"
        for flag, path in cfg.join:
            fd = syscalls.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns(fd, flag)
            finally:
                syscalls.close(fd)
        if cfg.new_userns:
            step = "namespace user"
            syscalls.unshare(sc.CLONE_NEWUSER)
            if os.geteuid() != 0:
                # /proc/PID/* of a non-dumpable process are root's: an unprivileged
                # parent (or its newuidmap) could not write the id maps, nor slirp4netns
                # open the namespaces. Rootless, we and the init stay dumpable: they are
                # the user's own processes, the runtime's files are not theirs to write
                # (so no /proc/PID/exe overwrite, CVE-2019-5736), and an exec makes any
                # process dumpable again anyway.
                syscalls.set_dumpable(True)
            sync.send(sock, {"type": "userns", "pid": syscalls.getpid()})
            sync.expect(sock, "mapped")
            syscalls.setresgid(0, 0, 0)
            syscalls.setresuid(0, 0, 0)
            if not cfg.detach:
                # A credential change clears the parent-death signal: arm it again.
                syscalls.set_pdeathsig(signal.SIGKILL)
        step = "namespace unshare"
        # The mount namespace is the init's alone: pivot_root changes the root of
        # every process in the namespace, and the monitor must keep the host's.
        # The runtime puts the init (never this process) in the container's cgroups
        # once it is forked; its cgroup namespace, to be rooted there, is made after.
        flags = cfg.unshare_flags & ~sc.CLONE_NEWNS & ~cgroupns_after_join(cfg)
        if flags:
            syscalls.unshare(flags)
        syscalls.set_child_subreaper()
        step = "fork init"
        # The watch pipe's write end is CLOEXEC in the init: EOF = exec'd or died.
        watch_r, watch_w = (syscalls.pipe2(os.O_CLOEXEC) if watches_exec(cfg.process)
                            else (-1, -1))
        pid = syscalls.fork()
        if pid == 0:
            if exit_fd >= 0:
                syscalls.close(exit_fd)
            if watch_r >= 0:
                syscalls.close(watch_r)
            container_init(cfg, sock, fifo_fd, watch_w, syscalls)
        if watch_w >= 0:
            syscalls.close(watch_w)
        if fifo_fd >= 0:
            syscalls.close(fifo_fd)
        if cfg.join_mount_fd >= 0:
            syscalls.close(cfg.join_mount_fd)
        sync.send(sock, {"type": "pid", "pid": pid, "monitor": syscalls.getpid()})
        if watch_r >= 0:
            step = "exec watch"
            sync.watch_exec(sock, watch_r, pid, syscalls)
        sock.close()
    except BaseException as exc:  # noqa: BLE001 - report every failure to the parent
        sync.send_error(sock, step, exc)
        syscalls._exit(EXIT_SETUP_FAILED)
    monitor(exit_fd, pid, cfg.waiter, syscalls)


def monitor(exit_fd: int, init_pid: int, waiter: str | None = None,
            syscalls: Syscalls = LIBC) -> None:
    """Reap the init (and orphans that come to us), record the exit status, exit.

    With the compiled waiter, exec it (same job, a fraction of the memory).
    """
    # Hold only our own fds: whatever the caller left inheritable (a pipe's write
    # end, a listening socket) must not live as long as the container.
    close_fds(3, {exit_fd} - {-1}, syscalls)
    try:
        fd = syscalls.open("/dev/null", os.O_RDWR)
        for target in (0, 1, 2):
            syscalls.dup2(fd, target)
        syscalls.close(fd)
    except OSError:
        pass
    if waiter:
        try:
            if exit_fd >= 0:
                syscalls.set_inheritable(exit_fd, True)
            syscalls.execve(waiter, [waiter, str(exit_fd), str(init_pid)], {})
        except OSError:
            pass        # fall back to the Python loop below
    status = None
    while True:
        try:
            pid, st = syscalls.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == init_pid:
            status = st
            if exit_fd >= 0:
                try:
                    write_exit(exit_fd, st, syscalls)
                except OSError:
                    pass
    if status is None:
        syscalls._exit(EXIT_SETUP_FAILED)
    if os.WIFSIGNALED(status):
        syscalls._exit(128 + os.WTERMSIG(status))
    syscalls._exit(os.WEXITSTATUS(status))


def container_init(cfg: InitConfig, sock: socket.socket, fifo_fd: int, watch_fd: int = -1,
                   syscalls: Syscalls = LIBC) -> None:
    """pid 1 of the container. Never returns."""
    step = "init"
    try:
        if not cfg.detach:
            syscalls.set_pdeathsig(signal.SIGKILL)
            cfg.process.die_with_parent = True
            cfg.process.parent_pid = syscalls.getppid()
        if cfg.join_mount_fd >= 0:
            step = "namespace mount"
            syscalls.setns(cfg.join_mount_fd, sc.CLONE_NEWNS)
            syscalls.close(cfg.join_mount_fd)
        elif cfg.unshare_flags & sc.CLONE_NEWNS:
            step = "namespace mount"
            syscalls.unshare(sc.CLONE_NEWNS)
        sync.expect(sock, "continue", container_id=cfg.container_id)
        if cgroupns_after_join(cfg):
            step = "namespace cgroup"
            syscalls.unshare(sc.CLONE_NEWCGROUP)     # the runtime has put us in our cgroups
        if cfg.loopback_up:
            step = "network lo"
            syscalls.loopback_up()
        step = "rootfs"
        mount_rootfs(cfg, syscalls)
        if cfg.pause_before_pivot:
            # createContainer: the parent runs the hooks in our mount namespace,
            # with every mount made and the host's root still ours.
            step = "hooks createContainer"
            sync.send(sock, {"type": "hooks", "step": "createContainer"})
            sync.expect(sock, "continue", container_id=cfg.container_id)
            step = "rootfs"
        enter_rootfs(cfg, syscalls)
        if cfg.hostname is not None:
            step = "hostname"
            syscalls.sethostname(cfg.hostname)
        if cfg.domainname is not None:
            step = "domainname"
            syscalls.setdomainname(cfg.domainname)
        if cfg.process.terminal:
            step = "terminal"
            setup_terminal(sock, syscalls)
        if fifo_fd >= 0:
            # Whoever calls start cannot hear what fails after it: check now, as
            # runc's init does before it waits, what a config may get wrong.
            step = f"cwd args={cfg.process.args[0]}"
            check_cwd(cfg.process.cwd, syscalls)
            step = f"exec args={cfg.process.args[0]}"
            check_executable(cfg.process.args[0], cfg.process.env, syscalls)
        sync.send(sock, {"type": "ready"})
        if fifo_fd >= 0:
            step = "exec fifo wait"
            fd = syscalls.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
            syscalls.write(fd, b"0")
            syscalls.close(fd)
            syscalls.close(fifo_fd)
            cfg.process.errors_to_stderr = not cfg.exec_heard
        syscalls.setsid()
        if cfg.process.terminal:
            claim_terminal(syscalls)
        finish_process(cfg.process, sock, watch_fd, syscalls)
    except BaseException as exc:  # noqa: BLE001
        sync.send_error(sock, getattr(exc, "step", None) or step, exc)
        syscalls._exit(EXIT_SETUP_FAILED)


def setup_terminal(sock: socket.socket, syscalls: Syscalls = LIBC) -> None:
    """Open a pty in the container's own devpts; send the master to the parent;
    make the slave our stdio (CVE-era rule: never a host /dev/console)."""
    master = syscalls.open("/dev/pts/ptmx" if syscalls.exists("/dev/pts/ptmx") else "/dev/ptmx",
                           os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    syscalls.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    num = struct.unpack("i", syscalls.ioctl(master, TIOCGPTN, struct.pack("i", 0)))[0]
    slave = syscalls.open(f"/dev/pts/{num}", os.O_RDWR | os.O_NOCTTY)
    sync.send(sock, {"type": "pty"}, fds=[master])
    syscalls.close(master)
    for fd in (0, 1, 2):
        syscalls.dup2(slave, fd)
    if slave > 2:
        syscalls.close(slave)


def claim_terminal(syscalls: Syscalls = LIBC) -> None:
    """Make the pty on stdin our controlling terminal (after setsid)."""
    syscalls.ioctl(0, termios.TIOCSCTTY, 0)


def setup_rootfs(cfg: InitConfig, syscalls: Syscalls = LIBC) -> None:
    """The container's filesystem: mount_rootfs, then enter_rootfs."""
    mount_rootfs(cfg, syscalls)
    enter_rootfs(cfg, syscalls)


def mount_rootfs(cfg: InitConfig, syscalls: Syscalls = LIBC) -> None:
    """Every mount of the spec, made under the rootfs (resolved in it), before pivot_root."""
    root = cfg.rootfs
    if cfg.own_mount_ns:
        syscalls.mount(None, "/", None, cfg.root_propagation)
        # A bind of the rootfs onto itself makes it a mount point pivot_root accepts.
        syscalls.mount(root, root, None, sc.MS_BIND | sc.MS_REC)
    root_fd = syscalls.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in cfg.mounts:
            try:
                mounts.mount_in_root(root_fd, m, syscalls)
            except OSError as exc:
                _step(exc, f"mount {m.destination}")
                raise
            if m.destination == "/proc":
                target = mounts.open_in_root(root_fd, "/proc", syscalls=syscalls)
                try:
                    if not mounts.is_procfs(mounts.fd_path(target), syscalls):
                        raise _step(OSError(errno.EINVAL, "mounted /proc is not procfs"), "mount /proc")
                finally:
                    syscalls.close(target)
        if cfg.populate_dev:
            skip = devices.dev_names(cfg.devices) | (set() if cfg.dev_core else {"core"})
            devices.populate_dev(root_fd, use_bind=cfg.devices_by_bind, syscalls=syscalls, skip=skip)
        if cfg.devices:
            devices.create_devices(root_fd, cfg.devices, cfg.devices_by_bind, syscalls)
        if cfg.cgroup_mount:
            mount_cgroups(root_fd, cfg, syscalls)
        for dest, src in cfg.extra_binds:
            mounts.mount_in_root(root_fd, mounts.plan_mount(dest, "bind", src, ["bind"]), syscalls)
    finally:
        syscalls.close(root_fd)


def enter_rootfs(cfg: InitConfig, syscalls: Syscalls = LIBC) -> None:
    """Make the rootfs our root (pivot, move or chroot), then what is done from
    inside: sysctls, masked and read-only paths, the read-only root."""
    root = cfg.rootfs
    if cfg.root_mode == PIVOT:
        mounts.pivot_into(root, syscalls)
    elif cfg.root_mode == MOVE:
        mounts.move_into(root, syscalls)
    elif cfg.root_mode == CHROOT:
        syscalls.chdir(root)
        syscalls.chroot(".")
        syscalls.chdir("/")
    else:       # never a silent chroot: an unknown mode is an error
        raise OSError(errno.EINVAL, f"unknown root mode {cfg.root_mode!r}")
    # sysctls before masked/read-only paths: those make /proc/sys read-only.
    for key, value in cfg.sysctls.items():
        if not mounts.is_procfs("/proc/sys", syscalls):
            raise _step(OSError(errno.EACCES, "/proc is not procfs", "/proc/sys"), f"sysctl {key}")
        try:
            _write("/proc/sys/" + key.replace(".", "/"), value, syscalls)
        except OSError as exc:
            _step(exc, f"sysctl {key}")
            raise
    for path in cfg.masked_paths:
        try:
            mounts.mask_path(path, syscalls)
        except OSError as exc:
            _step(exc, f"mask {path}")
            raise
    for path in cfg.readonly_paths:
        try:
            mounts.readonly_path(path, syscalls)
        except OSError as exc:
            _step(exc, f"readonly {path}")
            raise
    if cfg.root_mode != CHROOT:
        if cfg.root_propagation_final:
            syscalls.mount(None, "/", None, cfg.root_propagation_final)
        # Again, after the pivot: making the tree rslave there (pivot_into) turned a shared
        # mount private, and the root's recursive propagation is only the default; a
        # mount's own option wins.
        for m in cfg.mounts:
            for prop in m.propagation:
                try:
                    syscalls.mount(None, m.destination, None, prop)
                except OSError as exc:
                    _step(exc, f"mount {m.destination}")
                    raise
    if cfg.readonly_root:
        syscalls.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)


def mount_cgroups(root_fd: int, cfg: InitConfig, syscalls: Syscalls = LIBC) -> None:
    """A read-only view of the container's own cgroups (CVE-2023-25809)."""
    dest = cfg.cgroup_mount
    assert dest
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    if len(cfg.cgroup_binds) == 1 and cfg.cgroup_binds[0][0] == "":
        plan = mounts.plan_mount(dest, "bind", cfg.cgroup_binds[0][1],
                                 ["bind", "ro", "nosuid", "nodev", "noexec"])
        mounts.mount_in_root(root_fd, plan, syscalls)
        return
    mounts.mount_in_root(root_fd, mounts.MountPlan(dest, "tmpfs", "tmpfs", flags, "mode=755"), syscalls)
    for sub, host_dir in cfg.cgroup_binds:
        mounts.mount_in_root(root_fd, mounts.plan_mount(
            f"{dest}/{sub}", "bind", host_dir, ["bind", "ro", "nosuid", "nodev", "noexec"]), syscalls)
    target = mounts.open_in_root(root_fd, dest, syscalls=syscalls)
    try:
        syscalls.mount(None, mounts.fd_path(target), None,
                       sc.MS_REMOUNT | sc.MS_RDONLY | flags)
    finally:
        syscalls.close(target)


def _step(exc: OSError, step: str) -> OSError:
    """Name the step an OSError failed in (the init's error message says it)."""
    exc.step = step  # type: ignore[attr-defined]
    return exc


def close_fds(keep_below: int, keep: set[int], syscalls: Syscalls = LIBC) -> None:
    """Close every fd >= keep_below except ``keep`` (which must be CLOEXEC)."""
    start = keep_below
    for fd in sorted(k for k in keep if k >= keep_below):
        if fd > start:
            syscalls.close_range(start, fd - 1)
        start = fd + 1
    syscalls.close_range(start)


def check_cwd(cwd: str, syscalls: Syscalls = LIBC) -> None:
    """chdir to ``cwd`` and back, as root; a permission error is left to
    finish_process, where the process's own user tries (as runc does)."""
    try:
        syscalls.chdir(cwd)
    except PermissionError:
        return
    try:
        if syscalls.getcwd().startswith("(unreachable)"):
            raise OSError(errno.EPERM, "cwd is outside the container", cwd)
    finally:
        syscalls.chdir("/")


def check_executable(name: str, env: list[str], syscalls: Syscalls = LIBC) -> None:
    exe = find_executable(name, env, syscalls)
    syscalls.stat(exe)      # a path with a slash is not looked up: does it exist?
    if not syscalls.access(exe, os.X_OK) or syscalls.isdir(exe):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), exe)


def find_executable(name: str, env: list[str], syscalls: Syscalls = LIBC) -> str:
    if "/" in name:
        return name
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for item in env:
        if item.startswith("PATH="):
            path = item[5:]
    for d in path.split(":"):
        candidate = f"{d or '.'}/{name}"
        if syscalls.access(candidate, os.X_OK) and not syscalls.isdir(candidate):
            return candidate
    raise OSError(errno.ENOENT, "executable file not found in $PATH", name)


def finish_process(p: ProcessConfig, sock: socket.socket, watch_fd: int = -1,
                   syscalls: Syscalls = LIBC) -> None:
    """Drop to the process's identity and exec it. Shared by init and exec.

    process.oom_score_adj is not set here: the parent writes it (launch.py),
    from outside the container (which may have no /proc) and with
    CAP_SYS_RESOURCE (to lower it). ``watch_fd`` (CLOEXEC) stays open until
    execve: its closing tells stage-1 or the exec helper that we exec'd or died.
    """
    step = "rlimits"
    filtered = False
    try:
        rlimits.apply(p.rlimits, syscalls)
        # Close every fd we did not mean to pass *before* chdir, so that a cwd
        # like /proc/self/fd/7 cannot reach a leaked host directory (CVE-2024-21626).
        step = "close fds"
        close_fds(3 + p.preserve_fds, {sock.fileno(), watch_fd} - {-1}, syscalls)
        if not p.no_new_privileges and p.seccomp_filter is not None:
            # Without no_new_privs seccomp needs CAP_SYS_ADMIN: load it while we have it.
            step = "seccomp"
            syscalls.install_seccomp(p.seccomp_filter)
            filtered = True
        step = "user"
        capabilities.apply_user(p.uid, p.gid, p.additional_gids, p.cap_plan, syscalls)
        if p.die_with_parent:
            # The uid change cleared the parent-death signal: arm it again, then
            # make sure the parent did not die in between.
            syscalls.set_pdeathsig(signal.SIGKILL)
            if syscalls.getppid() != p.parent_pid:
                syscalls._exit(EXIT_SETUP_FAILED)
        step = "cwd"
        syscalls.chdir(p.cwd)
        if syscalls.getcwd().startswith("(unreachable)"):
            raise OSError(errno.EPERM, "cwd is outside the container", p.cwd)
        syscalls.umask(p.umask)
        step = "exec"
        exe = find_executable(p.args[0], p.env, syscalls)
        env = dict(e.split("=", 1) for e in p.env)   # before the filter: as little as possible after
        if p.apparmor_profile:
            step = "apparmor"
            apparmor.apply_on_exec(p.apparmor_profile, syscalls)
        if p.no_new_privileges:
            step = "no_new_privileges"
            syscalls.set_no_new_privs()
            if p.seccomp_filter is not None:
                step = "seccomp"
                syscalls.install_seccomp(p.seccomp_filter)
                filtered = True
        step = "exec"
        syscalls.execve(exe, p.args, env)
    except BaseException as exc:  # noqa: BLE001
        err = getattr(exc, "errno", None)
        if filtered and step == "exec" and err in (errno.EPERM, errno.ENOSYS):
            exc = OSError(err, f"{os.strerror(err)} (does the seccomp profile allow execve?)",
                          p.args[0])
        step = getattr(exc, "step", None) or f"{step} args={p.args[0]}"
        sync.send_error(sock, step, exc)
        if p.errors_to_stderr:
            try:
                syscalls.write(2, f"execdriver: {step}: {sync.error_message(exc)}\n".encode())
            except OSError:
                pass
        syscalls._exit(EXIT_SETUP_FAILED)
