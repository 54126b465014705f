"""``run`` and ``exec``: build the spec from the flags, start, forward signals, exit codes."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from execdriver.driver import ExecDriver, ExitStatus, Handle
    from execdriver.spec import Spec

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


def new_id() -> str:
    import uuid
    return uuid.uuid4().hex[:12]


def _check_detach_tty(args: argparse.Namespace, verb: str) -> None:
    from execdriver.cli.parser import UsageError

    if args.detach and args.tty:
        raise UsageError("-t cannot be used with -d: nothing would hold the terminal",
                         f"execdriver {verb}")


def spec_file_of(args: argparse.Namespace) -> Path | None:
    """The spec file named by --spec or SPEC_OR_BUNDLE (a file, or a dir with spec.json)."""
    from execdriver.cli.parser import UsageError
    from execdriver.errors import InvalidArgument

    if args.spec and args.bundle:
        raise UsageError("give either --spec FILE or SPEC_OR_BUNDLE, not both", "execdriver run")
    if not (args.spec or args.bundle):
        if not args.rootfs:
            raise UsageError("need --rootfs DIR, --spec FILE or SPEC_OR_BUNDLE", "execdriver run")
        return None
    path = Path(args.spec or args.bundle)
    if path.is_dir():
        if not (path / "spec.json").is_file():
            raise InvalidArgument(f"bundle dir={path}: no spec.json in it (to run a rootfs "
                                  "directory use --rootfs DIR)")
        return path / "spec.json"
    return path


def check_rootfs(path: str) -> None:
    from execdriver.errors import InvalidArgument

    if not os.path.isdir(path):
        what = "not a directory" if os.path.exists(path) else "no such directory"
        raise InvalidArgument(f"rootfs path={path}: {what}")


def build_spec(args: argparse.Namespace, driver_name: str) -> tuple[ExecDriver, Spec]:
    """Load the driver and build the final spec, reporting input errors before the driver loads."""
    from execdriver.cli.overrides import build_run_spec
    from execdriver.loader import load_driver
    from execdriver.spec import load_spec

    spec_path = spec_file_of(args)
    if args.rootfs:
        check_rootfs(args.rootfs)
    spec = None
    if spec_path is not None:
        spec = build_run_spec(load_spec(spec_path), args)
        check_rootfs(spec.root.path)
    driver = load_driver(driver_name, args.root)
    if spec is None:
        base = driver.default_spec(os.path.abspath(args.rootfs), list(args.command) or None)
        spec = build_run_spec(base, args)
    if getattr(args, "init", False):
        spec = with_init(spec, f"{args.verb} --init")
    driver.check_spec(spec)
    return driver, spec


def with_init(spec: Spec, step: str) -> Spec:
    """``spec`` with the tiny init as pid 1 (docker's --init): bind-mounted read-only at
    /dev/init, running the spec's command as its child."""
    from execdriver.errors import StepFailed
    from execdriver.kernel import tinyinit
    from execdriver.spec import Mount

    try:
        path = tinyinit.find()
    except StepFailed as exc:
        raise StepFailed(step, exc.message.partition(": ")[2] or exc.message) from None
    spec = spec.model_copy(deep=True)
    spec.mounts.append(Mount(destination=tinyinit.CONTAINER_PATH, type="bind", source=path,
                             options=["bind", "ro", "nosuid", "nodev"]))
    spec.process.args = [tinyinit.CONTAINER_PATH, "--", *spec.process.args]
    return spec


def new_container(args: argparse.Namespace) -> tuple[ExecDriver, str, Spec]:
    """run's and create's start: the driver, a free id and the final spec."""
    from execdriver.errors import ContainerExists
    from execdriver.state import validate_id

    cid = validate_id(args.name) if args.name else new_id()
    driver, spec = build_spec(args, args.driver)
    if driver.state.exists(cid):
        raise ContainerExists(cid)
    return driver, cid, spec


def make_detached(driver: ExecDriver, cid: str, make: Callable[[], object]) -> None:
    """``make()`` the container (start it detached, or create it), undoing a half-made
    one; then print its id."""
    try:
        make()
    except BaseException as exc:
        _cleanup_failed_start(driver, cid, exc)
        raise
    print(cid, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    _check_detach_tty(args, "run")
    if args.keep and (args.rm or args.detach):
        from execdriver.cli.parser import UsageError
        raise UsageError("--keep: not with --rm" if args.rm else
                         "--keep: a detached container is kept anyway", "execdriver run")
    driver, cid, spec = new_container(args)
    if args.detach:
        make_detached(driver, cid, lambda: driver.start(cid, spec, detach=True))
        return 0
    return run_foreground(driver, cid, spec, keep=args.keep).exit_code


def _cleanup_failed_start(driver: ExecDriver, cid: str, exc: BaseException) -> None:
    """Undo a start that failed half-way; never touch a container someone else owns."""
    from execdriver.errors import ContainerExists

    if isinstance(exc, ContainerExists):
        return
    try:
        driver.terminate(cid)
    except Exception:  # noqa: BLE001, S110 - best effort; the start error is what matters
        pass


def run_foreground(driver: ExecDriver, cid: str, spec: Spec | None, keep: bool = False, *,
                   begin: Callable[[], Handle] | None = None,
                   follow: Callable[[], object] | None = None) -> ExitStatus:
    """Start, forward signals to the container while waiting, terminate it at the end.

    Signal handlers only queue the signal; the main thread forwards it with
    driver.kill() (never from inside a handler, which could interrupt the driver
    while it holds the container's lock). The wait runs in a helper thread with
    the forwarded signals blocked, so the kernel delivers them to the main thread.
    With a terminal (-t) the main thread relays the pty meanwhile.

    ``begin``: start a container that exists already (start -a) and return its handle:
    then nothing is removed, whatever happens. ``follow``: called while waiting and
    once at the end (start -a copies the container's log).
    """
    import queue
    import threading

    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    previous = {sig: signal.signal(sig, lambda signum, _frame: events.put(("signal", signum)))
                for sig in FORWARDED_SIGNALS}
    try:
        if begin is not None:
            handle = begin()
        else:
            assert spec is not None
            try:
                handle = driver.start(cid, spec)
            except BaseException as exc:
                _cleanup_failed_start(driver, cid, exc)
                raise

        def wait() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
            try:
                events.put(("exit", handle.wait()))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                events.put(("error", exc))

        threading.Thread(target=wait, name=f"wait-{cid}", daemon=True).start()
        pump = _Pump(driver, cid, events)
        try:
            master = getattr(handle, "pty_master", None)
            if master is not None:
                from execdriver.console import relay
                relay(master, lambda: pump.step(0) is not None,
                      stdin=spec is not None and spec.process.stdin)
            while pump.status is None:
                pump.step(0.2)
                if follow is not None:
                    follow()
            if follow is not None:
                follow()
        finally:
            if begin is not None or (keep and pump.status is not None):
                handle.close()          # stopped: kept for info, logs and rm, as docker's
            else:
                driver.terminate(cid)
        return pump.status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Pump:
    """Forwards queued signals to the container until its exit status arrives."""

    def __init__(self, driver: ExecDriver, cid: str, events: Any) -> None:
        self.driver, self.cid, self.events = driver, cid, events
        self.status: ExitStatus | None = None

    def step(self, timeout: float) -> ExitStatus | None:
        """Handle what is queued (waiting up to ``timeout`` for the first event)."""
        import queue

        from execdriver.errors import ExecDriverError

        while self.status is None:
            try:
                # A timeout, in case a driver thread (not ours) took the signal and the
                # main thread must run the handler by itself.
                kind, value = self.events.get(timeout=timeout) if timeout else \
                    self.events.get_nowait()
            except queue.Empty:
                break
            timeout = 0
            if kind == "signal":
                try:
                    self.driver.kill(self.cid, value)
                except (ExecDriverError, OSError):
                    pass  # it has just exited: the exit event follows
            elif kind == "error":
                raise value
            elif value is None:  # pragma: no cover - a waiter without timeout returns a status
                raise RuntimeError("driver handle returned no exit status")
            else:
                self.status = value
        return self.status


def cmd_exec(args: argparse.Namespace) -> int:
    from execdriver.cli.overrides import build_exec_process
    from execdriver.cli.parser import UsageError

    from .containers import driver_for

    if not args.command:
        raise UsageError("missing command (execdriver exec ID -- CMD...)", "execdriver exec")
    _check_detach_tty(args, "exec")
    driver, state = driver_for(args.root, args.id)
    process = build_exec_process(driver.process_for_exec(args.id, list(args.command)), args,
                                 state.rootfs)
    if not (args.detach or process.terminal):
        return driver.exec(args.id, process).exit_code
    handle = driver.exec_start(args.id, process, detach=args.detach)
    if args.detach:
        print(handle.pid, flush=True)
        return 0
    master = handle.pty_master
    if master is not None:
        from execdriver.console import relay
        relay(master, lambda: handle.wait(0) is not None, stdin=process.stdin)
    status = handle.wait()
    assert status is not None
    return status.exit_code
