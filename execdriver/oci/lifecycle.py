"""create, run, exec, pause, resume, and the slow paths of kill and delete.

The native driver does the work. What the front end adds:

- **runc's process model.** The driver's create leaves a monitor process that
  reaps the init. An OCI caller (conmon, containerd-shim) is a child
  subreaper and wants the init as its own child, to reap it and learn its
  exit status; so once the container is created the monitor is ended and the
  init is re-parented to the caller (see :func:`release_init`).
- **Hooks** the driver does not run yet (prestart, createRuntime and
  createContainer after create; startContainer, poststart in start;
  poststop in delete), with the OCI state on stdin.
- **cgroupsPath**: the container's cgroup is named by the config.
- **Terminals**: the pty master goes to ``--console-socket`` (terminal.py).
"""

from __future__ import annotations

import json
import os
import signal as _signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import (
    ContainerExists,
    ContainerNotFound,
    ExecDriverError,
    InvalidArgument,
    InvalidState,
    SpecError,
    StepFailed,
)
from . import control, state, terminal
from ..hooks import run_hooks

FORWARDED_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                     _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGWINCH, _signal.SIGCONT,
                     _signal.SIGALRM)


@dataclass
class Context:
    """Global options every verb sees."""

    root: str
    warn: Callable[[str], None]
    debug: Callable[[str], None]


def load_driver(root: str, name: str = "native", *, no_pivot: bool = False) -> Any:
    from ..loader import load_driver as load
    driver = load(name or "native", state_root=root)
    if no_pivot:
        # The kernel layer can MS_MOVE the rootfs onto / instead of pivot_root
        # (for a rootfs on a ramdisk, where pivot_root fails).
        driver.root_mode = "move"  # type: ignore[attr-defined]
    return driver


def create_in_cgroup(driver: Any, container_id: str, spec: Any, stdio: Any,
                     cgroup_name: str | None) -> Any:
    """driver.create with the container's cgroup at ``cgroup_name`` (cgroupsPath)."""
    if not cgroup_name:
        return driver.create(container_id, spec, stdio=stdio)
    return driver.create(container_id, spec, stdio=stdio, cgroup_name=cgroup_name)


def driver_for(root: str, container_id: str) -> Any:
    """The driver that made this container (native unless the record says otherwise)."""
    st = state.read(root, container_id)
    return load_driver(root, st.get("driver") or "native")


# --- create / run ---------------------------------------------------------------

def release_init(driver: Any, container_id: str) -> None:
    """End the driver's monitor so that the init is re-parented to our caller.

    The init (blocked on the exec fifo, so alive) then belongs to the nearest
    child subreaper among our ancestors: conmon, containerd-shim, or ``run``
    itself. The kernel re-parents it before the monitor becomes a zombie, so
    once the monitor's pidfd is readable the init has its new parent.
    """
    st = driver.state.read(container_id)
    mon, start = st.extra.get("monitor_pid"), st.extra.get("monitor_start")
    if mon and state.pid_alive(mon, start):
        try:
            os.kill(mon, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(mon, 0)          # our child when we are the subreaper (run)
        except ChildProcessError:
            state.wait_gone(mon, start, 5.0)


def create(ctx: Context, container_id: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False,
           preserve_fds: int = 0, foreground: bool = False,
           pty_master: list[int | None] | None = None) -> dict[str, Any]:
    """Set the container up; its init waits before exec until ``start``.

    With a terminal, the pty master goes to ``console_socket``, or (``run`` in
    the foreground) into ``pty_master[0]``.
    """
    pty_master = pty_master if pty_master is not None else [None]
    from ..driver import Stdio
    from ..spec import Hooks
    from .config import load_bundle

    state.container_dir(ctx.root, container_id)
    bundle = os.path.abspath(bundle)
    conv = load_bundle(bundle)
    for name in conv.ignored:
        ctx.debug(f"config.json: {name} (ignored)")
    spec = conv.spec
    if console_socket and not spec.process.terminal:
        raise InvalidArgument("--console-socket: the config has no terminal (process.terminal "
                              "is false)")
    if spec.process.terminal and not console_socket and not foreground:
        raise InvalidArgument("process.terminal: a detached container with a terminal needs "
                              "--console-socket")
    spec.process.preserve_fds = preserve_fds
    # The front end runs the hooks; the driver gets none so none runs twice.
    spec.hooks = Hooks()
    driver = load_driver(ctx.root, no_pivot=no_pivot)
    if os.path.isdir(state.container_dir(ctx.root, container_id)) or \
            state.creator_alive(ctx.root, container_id):
        raise ContainerExists(container_id)
    token = state.mark_creating(ctx.root, container_id)
    created = False
    try:
        create_in_cgroup(driver, container_id, spec, Stdio(0, 1, 2), conv.cgroup_name)
        created = True
        master = driver.pop_pty_master(container_id) if spec.process.terminal else None
        if master is not None:
            if console_socket:
                try:
                    terminal.send_console(console_socket, master, conv.console_size)
                finally:
                    os.close(master)
            else:
                if conv.console_size:
                    terminal.set_size(master, *conv.console_size)
                pty_master[0] = master      # run's foreground proxy takes it

        def note(s: Any) -> None:
            s.bundle = bundle
            s.extra["oci"] = {"bundle": bundle, "hooks": conv.hooks,
                              "cgroup": conv.cgroup_name, "reaper": "caller",
                              "oci_version": conv.oci_version}
        st = driver.state.update(container_id, note)
        release_init(driver, container_id)
        oci = state.oci_state(ctx.root, json.loads(st.to_json()), "creating")
        for step in ("prestart", "createRuntime"):
            run_hooks(conv.hooks.get(step, []), oci, step)
        run_hooks(conv.hooks.get("createContainer", []), oci, "createContainer",
                  namespaces_of=st.pid, path_on_host=True)
        if pid_file:
            state.write_pid_file(pid_file, st.pid or 0)
        return oci
    except BaseException:
        if created:
            try:
                driver.terminate(container_id)
            except ExecDriverError:
                pass
        raise
    finally:
        state.clear_creating(ctx.root, container_id, token)


def run(ctx: Context, container_id: str, bundle: str, *, pid_file: str | None = None,
        console_socket: str | None = None, detach: bool = False, keep: bool = False,
        no_pivot: bool = False, preserve_fds: int = 0) -> int:
    """create + start; without ``detach`` wait, forward signals, delete, return the exit code."""
    from ..kernel import launch
    forwarder = None
    if not detach:
        from ..kernel import syscalls
        syscalls.set_child_subreaper()     # the init becomes our child: we reap it
        forwarder = SignalForwarder()      # from now on: a signal for us is for the container
    channels: dict[int, Any] = {}
    try:
        master: list[int | None] = [None]
        # Unlike create + start, run is there when the init goes on after start:
        # keep its sync channel, so that what fails then (cwd, execve) is reported.
        with launch.keeping_exec_channels() as channels:
            oci = create(ctx, container_id, bundle, pid_file=pid_file,
                         console_socket=console_socket, no_pivot=no_pivot,
                         preserve_fds=preserve_fds, foreground=not detach, pty_master=master)
        try:
            control.start(ctx.root, container_id, ctx.warn)
            channel = channels.pop(oci["pid"], None)
            if channel is not None:
                with channel:
                    launch.wait_exec_of(channel, oci["pid"], container_id=container_id)
                # EOF also when it died unable to report (a seccomp profile may deny it)
                status = launch.died_before_exec(oci["pid"])
                if status is not None:
                    raise StepFailed("exec", "the container process died before exec without "
                                     f"reporting why ({launch.describe_status(status)})",
                                     container_id=container_id)
        except BaseException:
            if master[0] is not None:
                os.close(master[0])
            _force_delete(ctx, container_id)
            raise
        if forwarder is None:
            return 0
        forwarder.target(oci["pid"])
        if master[0] is not None:
            try:
                terminal.proxy(master[0])
            finally:
                os.close(master[0])
        code = wait_child(oci["pid"])
    finally:
        for sock in channels.values():
            sock.close()
        if forwarder is not None:
            forwarder.restore()
    if not keep:
        _force_delete(ctx, container_id)
    return code


class SignalForwarder:
    """Catch the signals a foreground run/exec passes on; hold them until the
    target process exists, then send them (and every later one) to it."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.old = {sig: _signal.signal(sig, self._caught) for sig in FORWARDED_SIGNALS}

    def _caught(self, sig: int, _frame: Any) -> None:
        if self.pid is None:
            self.pending.append(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def target(self, pid: int) -> None:
        self.pid = pid
        pending, self.pending = self.pending, []
        for sig in pending:
            self._caught(sig, None)

    def restore(self) -> None:
        for sig, handler in self.old.items():
            _signal.signal(sig, handler)


def wait_child(pid: int) -> int:
    """Wait for our child ``pid``, reaping other orphans that come to us; its exit code."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if done == pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _force_delete(ctx: Context, container_id: str) -> None:
    try:
        delete(ctx, container_id, force=True)
    except ExecDriverError as exc:
        ctx.warn(str(exc))


# --- delete / kill (slow paths) ----------------------------------------------------

def delete(ctx: Context, container_id: str, force: bool) -> None:
    if control.delete(ctx.root, container_id, force, ctx.warn):
        return
    st = state.read(ctx.root, container_id)
    driver = load_driver(ctx.root, st.get("driver") or "native")
    try:
        driver.terminate(container_id)
    except ContainerNotFound:
        if not force:
            raise
    state.clear_creating(ctx.root, container_id)
    control.run_poststop(ctx.root, st, ctx.warn)


def kill(ctx: Context, container_id: str, sig: int, all_processes: bool) -> None:
    if control.kill(ctx.root, container_id, sig, all_processes):
        return
    st = state.read(ctx.root, container_id)
    if state.status(ctx.root, st) == "stopped":
        raise state.not_running()
    driver_for(ctx.root, container_id).kill(container_id, sig, all=True)


# --- pause / resume -------------------------------------------------------------------

def pause(ctx: Context, container_id: str) -> None:
    st = state.read(ctx.root, container_id)
    if state.status(ctx.root, st) not in ("running", "created"):
        raise InvalidState("container not running", container_id=container_id)
    driver_for(ctx.root, container_id).pause(container_id)


def resume(ctx: Context, container_id: str) -> None:
    st = state.read(ctx.root, container_id)
    if state.status(ctx.root, st) != "paused":
        raise InvalidState("container not paused", container_id=container_id)
    driver_for(ctx.root, container_id).unpause(container_id)


# --- exec -----------------------------------------------------------------------------

@dataclass
class ExecOptions:
    command: list[str]
    process_file: str | None = None
    detach: bool = False
    pid_file: str | None = None
    env: list[str] | None = None
    cwd: str | None = None
    user: str | None = None
    additional_gids: list[int] | None = None
    caps: list[str] | None = None
    no_new_privs: bool = False
    apparmor: str | None = None
    preserve_fds: int = 0
    ignore_paused: bool = False
    tty: bool = False
    console_socket: str | None = None


def exec_process(driver: Any, container_id: str, opts: ExecOptions) -> Any:
    """The Process to run: --process FILE as is, else the container's with changes."""
    from pydantic import ValidationError

    from ..spec import Process, User, problems_from
    from .config import convert_process, read_json

    if opts.process_file:
        what = f"exec --process {opts.process_file}"
        data = read_json(opts.process_file, what)
        if not isinstance(data, dict):
            raise InvalidArgument(f"{what}: must be a JSON object")
        try:
            proc = Process.model_validate(convert_process(data))
        except SpecError as exc:
            raise InvalidArgument(f"{what}: {'; '.join(exc.problems)}") from None
        except ValidationError as exc:
            raise InvalidArgument(f"{what}: {'; '.join(problems_from(exc))}") from None
        if opts.command:
            proc.args = list(opts.command)
    else:
        if not opts.command:
            raise InvalidArgument("exec: a command is required (or --process FILE)")
        proc = driver.process_for_exec(container_id, opts.command)
    if opts.tty:
        proc.terminal = True
    if opts.console_socket and not proc.terminal:
        raise InvalidArgument("exec --console-socket: needs --tty (or terminal in --process)")
    if proc.terminal and opts.detach and not opts.console_socket:
        raise InvalidArgument("exec --detach with a terminal needs --console-socket")
    for item in opts.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"exec --env {item!r}: want KEY=VALUE")
        proc.env = {**proc.env, key: value}
    if opts.cwd:
        if not opts.cwd.startswith("/"):
            raise InvalidArgument(f"exec --cwd {opts.cwd!r}: must be an absolute path")
        proc.cwd = opts.cwd
    if opts.user or opts.additional_gids:
        uid, gid = proc.user.uid, proc.user.gid
        if opts.user:
            u, _, g = opts.user.partition(":")
            if not u.isdigit() or (g and not g.isdigit()):
                raise InvalidArgument(f"exec --user {opts.user!r}: want UID[:GID] (numbers)")
            uid, gid = int(u), int(g) if g else 0
        proc.user = User(uid=uid, gid=gid, additional_gids=list(opts.additional_gids or
                                                                proc.user.additional_gids))
    if opts.caps:
        proc.capabilities = proc.capabilities.with_changes(opts.caps, [])
    if opts.no_new_privs:
        proc.no_new_privileges = True
    if opts.apparmor:
        proc.apparmor_profile = opts.apparmor
    if opts.preserve_fds:
        proc.preserve_fds = opts.preserve_fds
    return proc


def exec_(ctx: Context, container_id: str, opts: ExecOptions) -> int:
    st = state.read(ctx.root, container_id)
    now = state.status(ctx.root, st)
    if now == "stopped":
        raise InvalidState("cannot exec in a stopped container", container_id=container_id)
    if now == "paused" and not opts.ignore_paused:
        raise InvalidState("cannot exec in a paused container (use --ignore-paused to override)",
                           container_id=container_id)
    driver = load_driver(ctx.root, st.get("driver") or "native")
    proc = exec_process(driver, container_id, opts)
    # With a pid file the helper must outlive us: our caller reaps it (its exit
    # code is the process's). That is the detached mode of the driver's exec.
    detached = opts.detach or bool(opts.pid_file)
    result = driver.exec(container_id, proc, detach=detached)
    master = getattr(result, "pty_master", None)
    if master is not None:
        try:
            if opts.console_socket:
                terminal.send_console(opts.console_socket, master)
            elif not opts.detach:
                terminal.proxy(master)
        finally:
            os.close(master)
    if opts.pid_file:
        state.write_pid_file(opts.pid_file, result.pid)
    if opts.detach:
        return 0
    if not hasattr(result, "wait"):
        return int(result.exit_code)
    if detached:
        forwarder = SignalForwarder()
        try:
            forwarder.target(result.pid)
            return wait_child(result.pid)
        finally:
            forwarder.restore()
    status = result.wait()
    return int(status.exit_code)
