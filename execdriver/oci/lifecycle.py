"""Every verb of execdriver-oci, as an adapter over execdriver.libcontainer.

The core's Container does the work (one state store, one lifecycle, hooks at
the OCI points). What the front end adds:

- **runc's process model.** An OCI caller (conmon, containerd-shim) is a child
  subreaper and wants the init as its own child, to reap it and learn its exit
  status: the Config says ``caller_reaps`` and the core ends its monitor once
  the container is created.
- **runc's messages and status rules** for each verb (podman and containerd
  match on them).
- **cgroupsPath** (the Config's ``cgroup_name``), ``--no-pivot`` (RootMode.MOVE).
- **Terminals**: the pty master goes to ``--console-socket`` (terminal.py).

``state``, ``start``, ``kill`` and ``delete`` import neither pydantic nor a
driver: the Container works from the stored config.json.
"""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ContainerNotFound, ExecDriverError, InvalidArgument, InvalidState, SpecError
from ..libcontainer.container import CREATED, CREATING, PAUSED, RUNNING, STOPPED, Container
from ..state import StateStore
from . import state, terminal

FORWARDED_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                     _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGWINCH, _signal.SIGCONT,
                     _signal.SIGALRM)


@dataclass
class Context:
    """Global options every verb sees."""

    root: str
    warn: Callable[[str], None]
    debug: Callable[[str], None]
    systemd_cgroup: bool = False


def _load(ctx: Context, container_id: str) -> Container:
    return Container.load(StateStore(ctx.root), container_id, warn=ctx.warn)


# --- state / start / kill / delete: the hot verbs ---------------------------------

def state_of(ctx: Context, container_id: str) -> dict[str, Any]:
    return _load(ctx, container_id).oci_state()


def start(ctx: Context, container_id: str) -> None:
    """startContainer hooks, the init execs, poststart hooks (Container.start)."""
    _load(ctx, container_id).start()


def kill(ctx: Context, container_id: str, sig: int, all_processes: bool) -> None:
    c = _load(ctx, container_id)
    now = c.status()
    if now == STOPPED and all_processes:
        return              # runc 1.1 answers kill --all of a stopped container with success
    if now in (STOPPED, CREATING) or not c.state.alive():
        raise state.not_running()
    try:
        c.signal(sig, all_processes)
    except InvalidState:
        raise state.not_running() from None
    if now == PAUSED and sig == _signal.SIGKILL and not all_processes:
        try:
            c.resume()      # a frozen init cannot die until thawed
        except ExecDriverError:
            pass


def delete(ctx: Context, container_id: str, force: bool) -> None:
    try:
        c = _load(ctx, container_id)
    except ContainerNotFound:
        if force:
            return
        raise
    now = c.status()
    if now in (RUNNING, PAUSED, CREATING) and not force:
        raise state.not_stopped(container_id, now)
    try:
        c.destroy()
    except ContainerNotFound:
        if not force:
            raise


# --- create / run ---------------------------------------------------------------

def create(ctx: Context, container_id: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False,
           preserve_fds: int = 0) -> dict[str, Any]:
    """Set the container up; its init waits before exec until ``start``."""
    return _create(ctx, container_id, bundle, pid_file=pid_file, console_socket=console_socket,
                   no_pivot=no_pivot, preserve_fds=preserve_fds).oci_state(CREATED)


def _create(ctx: Context, container_id: str, bundle: str, *, pid_file: str | None = None,
            console_socket: str | None = None, no_pivot: bool = False,
            preserve_fds: int = 0, foreground: bool = False, starts_it: bool = False,
            pty_master: list[int | None] | None = None) -> Container:
    """create; with a terminal, the pty master goes to ``console_socket``, or (``run``
    in the foreground) into ``pty_master[0]``. ``starts_it``: this process starts it
    (run) and keeps the init's sync channel, so Container.start reports exec failures."""
    pty_master = pty_master if pty_master is not None else [None]
    store = StateStore(ctx.root)
    store.dir(container_id)             # InvalidArgument for a bad id, before any work
    bundle = os.path.abspath(bundle)
    # A running server converts config.json (pydantic, the spec models: most of a cold
    # create's time) into plain data; the launch stays here, so conmon or the shim
    # remain the container's ancestors. Without one, the same is done here.
    from . import remote_prepare
    prep = _logged(ctx, (remote_prepare and remote_prepare(bundle, preserve_fds, no_pivot))
                   or prepare(bundle, preserve_fds, no_pivot))
    if console_socket and not prep["terminal"]:
        raise InvalidArgument("--console-socket: the config has no terminal (process.terminal "
                              "is false)")
    if prep["terminal"] and not console_socket and not foreground:
        raise InvalidArgument("process.terminal: a detached container with a terminal needs "
                              "--console-socket")
    from ..config import Config
    size = prep["console_size"]
    console_size = (int(size[0]), int(size[1])) if size else None
    config = _cgroup_driver(ctx, Config.from_json(prep["config"]), container_id)
    c = Container.create(store, container_id, config,
                         owner=state.DRIVER, stdio=(0, 1, 2), detach=True, wait_for_start=True,
                         warn=ctx.warn, files={"spec.json": prep["spec"]},
                         keep_exec_channel=starts_it)
    try:
        master = c.pop_pty_master()
        if master is not None:
            if console_socket:
                try:
                    terminal.send_console(console_socket, master, console_size)
                finally:
                    os.close(master)
            else:
                if console_size:
                    terminal.set_size(master, *console_size)
                pty_master[0] = master      # run's foreground proxy takes it
        if pid_file:
            state.write_pid_file(pid_file, c.state.pid or 0)
    except BaseException:
        c.close_exec_channel()
        try:
            c.destroy()
        except ExecDriverError:
            pass
        raise
    return c


def prepare(bundle: str, preserve_fds: int = 0, no_pivot: bool = False) -> dict[str, Any]:
    """A bundle's config.json as plain data for create: the Config (JSON), the spec
    (JSON, kept for update), the cgroup name, the terminal and console size, what was
    ignored or warned about. SpecError for a config we cannot run. JSON-safe: a warm
    server computes it for a cold client."""
    from ..config import RootMode
    from ..libcontainer.specconv import config_from_spec
    from ..spec import revalidate
    from .config import load_bundle
    conv = load_bundle(bundle)
    spec = conv.spec
    spec.process.preserve_fds = preserve_fds
    revalidate(spec)
    config = config_from_spec(spec, root_mode=RootMode.MOVE if no_pivot else RootMode.PIVOT,
                              cgroup_name=conv.cgroup_name or None, caller_reaps=True,
                              bundle=bundle)
    return {"config": config.to_json(), "spec": spec.model_dump_json(),
            "terminal": spec.process.terminal, "ignored": list(conv.ignored),
            "warnings": list(conv.warnings),
            "console_size": list(conv.console_size) if conv.console_size else None}


def _cgroup_driver(ctx: Context, config: Any, container_id: str) -> Any:
    """``config`` with the cgroup of the driver asked for: cgroupfs, or with
    ``--systemd-cgroup`` a systemd scope (cgroupsPath slice:prefix:name; none given:
    system.slice:execdriver:ID), as runc decides."""
    name = config.cgroup_name or ""
    systemd = name.startswith("systemd:")
    if ctx.systemd_cgroup and not name:
        return config.replace(cgroup_name=f"systemd::execdriver:{container_id}")
    if ctx.systemd_cgroup and not systemd:
        raise InvalidArgument(f"--systemd-cgroup: linux.cgroupsPath {'/' + name!r} is not "
                              "slice:prefix:name")
    if systemd and not ctx.systemd_cgroup:
        raise InvalidArgument(f"linux.cgroupsPath {name[len('systemd:'):]!r} is a systemd "
                              "slice:prefix:name path: pass --systemd-cgroup")
    return config


def _logged(ctx: Context, prep: dict[str, Any]) -> dict[str, Any]:
    """``prep`` (prepare()'s), its ignored fields and warnings logged."""
    for name in prep["ignored"]:
        ctx.debug(f"config.json: {name} (ignored)")
    for warning in prep["warnings"]:
        ctx.warn(f"config.json: {warning}")
    return prep


def _bundle_config(ctx: Context, bundle: str, *, no_pivot: bool = False) -> dict[str, Any]:
    return _logged(ctx, prepare(os.path.abspath(bundle), 0, no_pivot))


# --- checkpoint / restore (CRIU) ---------------------------------------------------

def checkpoint(ctx: Context, container_id: str, image_path: str | None, *,
               work_path: str | None = None, leave_running: bool = False,
               tcp_established: bool = False, file_locks: bool = False,
               ext_unix_sk: bool = False, shell_job: bool = False) -> None:
    """runc checkpoint: dump the container into ``image_path`` (default ./checkpoint);
    then, unless ``leave_running``, the container is deleted (as runc does), so that
    ``restore`` can make it again under the same id."""
    from ..libcontainer.checkpoint import checkpoint as dump
    c = Container.load(StateStore(ctx.root), container_id, warn=ctx.warn)
    dump(c, image_path or os.path.join(os.getcwd(), "checkpoint"), leave_running=leave_running,
         tcp_established=tcp_established, file_locks=file_locks, ext_unix_sk=ext_unix_sk,
         shell_job=shell_job, work_dir=work_path)
    if not leave_running:
        c.destroy()


def restore(ctx: Context, container_id: str, bundle: str, image_path: str | None, *,
            work_path: str | None = None, pid_file: str | None = None,
            console_socket: str | None = None, detach: bool = False, no_pivot: bool = False,
            tcp_established: bool = False, file_locks: bool = False) -> int:
    """runc restore: a running container from the checkpoint, configured by the bundle's
    config.json (its rootfs, mounts and cgroup may differ from the checkpointed one's).
    The restored init is our child: our caller (a subreaper) reaps it once we exit. Without
    ``detach``, wait for it here, delete it and return its exit code."""
    from ..config import Config
    from ..libcontainer.checkpoint import restore as restore_images
    store = StateStore(ctx.root)
    store.dir(container_id)
    prep = _bundle_config(ctx, bundle, no_pivot=no_pivot)
    if prep["terminal"] or console_socket:
        raise InvalidArgument("restore: a container with a terminal cannot be restored "
                              "(nor checkpointed)")
    if not detach:
        from ..kernel import syscalls
        syscalls.set_child_subreaper()
    c = restore_images(store, container_id, image_path or os.path.join(os.getcwd(),
                                                                       "checkpoint"),
                       owner=state.DRIVER, config=Config.from_json(prep["config"]),
                       stdio=(0, 1, 2), files={"spec.json": prep["spec"]}, work_dir=work_path,
                       tcp_established=tcp_established or None,
                       file_locks=file_locks or None, warn=ctx.warn)
    if pid_file:
        state.write_pid_file(pid_file, c.state.pid or 0)
    if detach:
        return 0
    forwarder = SignalForwarder()
    forwarder.target(c.state.pid or 0)
    _, status = os.waitpid(c.state.pid or 0, 0)
    _force_delete(ctx, container_id)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)


def run(ctx: Context, container_id: str, bundle: str, *, pid_file: str | None = None,
        console_socket: str | None = None, detach: bool = False, keep: bool = False,
        no_pivot: bool = False, preserve_fds: int = 0) -> int:
    """create + start; without ``detach`` wait, forward signals, delete, return the exit code."""
    forwarder = None
    if not detach:
        from ..kernel import syscalls
        syscalls.set_child_subreaper()     # the init becomes our child: we reap it
        forwarder = SignalForwarder()      # from now on: a signal for us is for the container
    try:
        master: list[int | None] = [None]
        # Unlike create + start, run is there when the init goes on after start: the
        # Container keeps its sync channel, so what fails then (cwd, execve) is reported.
        c = _create(ctx, container_id, bundle, pid_file=pid_file, console_socket=console_socket,
                    no_pivot=no_pivot, preserve_fds=preserve_fds, foreground=not detach,
                    starts_it=True, pty_master=master)
        pid = c.state.pid or 0
        try:
            c.start()
        except BaseException:
            c.close_exec_channel()
            if master[0] is not None:
                os.close(master[0])
            _force_delete(ctx, container_id)
            raise
        if forwarder is None:
            return 0
        forwarder.target(pid)
        if master[0] is not None:
            from ..console import relay
            try:
                relay(master[0], close_master=False)
            finally:
                os.close(master[0])
        code = wait_child(pid)
    finally:
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


# --- pause / resume -------------------------------------------------------------------

def pause(ctx: Context, container_id: str) -> None:
    c = _load(ctx, container_id)
    if c.status() not in (RUNNING, CREATED):
        raise InvalidState("container not running", container_id=container_id)
    c.pause()


def resume(ctx: Context, container_id: str) -> None:
    c = _load(ctx, container_id)
    if c.status() != PAUSED:
        raise InvalidState("container not paused", container_id=container_id)
    c.resume()


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


def exec_process(store: StateStore | None, container_id: str, opts: ExecOptions) -> Any:
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
        assert store is not None
        proc = store.read_spec(container_id).process.model_copy(deep=True)
        proc.args = list(opts.command)
        proc.terminal = False
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
    from ..config import Process as ProcessConfig
    from ..config import decode
    from ..kernel import launch
    c = _load(ctx, container_id)
    now = c.status()
    if now == STOPPED:
        raise InvalidState("cannot exec in a stopped container", container_id=container_id)
    if now == PAUSED and not opts.ignore_paused:
        raise InvalidState("cannot exec in a paused container (use --ignore-paused to override)",
                           container_id=container_id)
    proc = exec_process(c.store, container_id, opts)
    # With a pid file the helper must outlive us: our caller reaps it (its exit
    # code is the process's).
    detached = opts.detach or bool(opts.pid_file)
    started = c.exec(decode(ProcessConfig, proc.model_dump(), "process"), detach=detached,
                     allow_paused=opts.ignore_paused)
    pid, master = started.helper_pid, started.pty_master
    if master is not None:
        try:
            if opts.console_socket:
                terminal.send_console(opts.console_socket, master)
            elif not opts.detach:
                from ..console import relay
                relay(master, close_master=False)
        finally:
            os.close(master)
    if opts.pid_file:
        state.write_pid_file(opts.pid_file, pid)
    if opts.detach:
        return 0
    if detached:
        forwarder = SignalForwarder()
        try:
            forwarder.target(pid)
            return wait_child(pid)
        finally:
            forwarder.restore()
    status = launch.wait_monitor(pid)
    assert status is not None
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
