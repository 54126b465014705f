"""Hooks at the OCI runtime-spec's points: run each hook with the container's OCI state JSON on stdin.

A hook is ``path`` (absolute, executed directly), ``args`` (argv, args[0]
included; empty means ``[path]``), ``env`` (the hook's whole environment) and
``timeout`` in seconds. A non-zero exit, a signal, a timeout or a path that
cannot be executed is a :class:`StepFailed` naming the step, the hook's path
and index, and the end of what it wrote on stderr.

Hooks that the runtime-spec runs "in the container namespace"
(createContainer, startContainer) get ``namespaces_of=<init pid>``: the hook
joins that process's namespaces (the mount namespace last) before exec. A
startContainer path resolves inside the container; a createContainer path
"in the runtime namespace" (``path_on_host``): the file is opened on the host
first and executed through /proc/self/fd/N after the join.

stdin and the captured output are memfds, not pipes: a hook that never reads
stdin cannot block us, and one that leaves a daemon behind holding its stdout
cannot make us wait for that daemon. A hook gets no fd of ours beyond 0-2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from .config import HOOK_FIELDS
from .errors import StepFailed

# The one table of OCI steps and their spec/Config field names lives in config.py.
SPEC_FIELDS = HOOK_FIELDS
STEPS = tuple(HOOK_FIELDS)
# user first (the others may belong to it), mount last (it changes our root)
_NS_ORDER = ("user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount")
_OUTPUT_TAIL = 512


class HookCommand:
    """One hook (a plain class: dataclasses would cost the fast paths an import)."""

    __slots__ = ("args", "env", "path", "timeout")

    def __init__(self, path: str, args: list[str] | None = None, env: list[str] | None = None,
                 timeout: int | None = None) -> None:
        self.path = path
        self.args = list(args or [])
        self.env = list(env or [])
        self.timeout = timeout


def hook_command(hook: Any) -> HookCommand:
    """A HookCommand from an execdriver.spec.Hook, a HookCommand or a plain dict."""
    if isinstance(hook, HookCommand):
        return hook
    get = hook.get if isinstance(hook, dict) else (lambda k, d=None: getattr(hook, k, d))
    return HookCommand(path=str(get("path") or ""), args=list(get("args") or []),
                       env=list(get("env") or []), timeout=get("timeout"))


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _namespace_fds(pid: int) -> list[tuple[int, int]]:
    """(fd, flag) for each namespace of ``pid`` that differs from ours, in join order."""
    from .kernel.syscalls import open_namespace_fds
    return open_namespace_fds(pid, _NS_ORDER)


def _spawn(argv: list[str], executable: str, env: dict[str, str], stdin: int, out: int,
           ns_fds: list[tuple[int, int]], keep_fd: int) -> int:
    """fork + exec ``executable``; with ``ns_fds``, join them and fork once more so the
    hook is inside the pid namespace too (its /proc/self then works in the container's
    /proc). Returns our child's pid (its exit code mirrors the hook's); OSError if
    the exec failed."""
    import signal

    from .kernel import syscalls
    rfd, wfd = os.pipe2(os.O_CLOEXEC)      # closed by a successful exec: EOF means it ran
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                        signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(stdin, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            # Nothing of ours (nor fds our caller gave us) reaches the hook.
            syscalls.close_range(3, flags=syscalls.CLOSE_RANGE_CLOEXEC)
            for fd, flag in ns_fds:
                syscalls.setns(fd, flag)
            if ns_fds:
                os.chdir("/")
                child = os.fork()
                if child:
                    os.close(wfd)          # only the process that execs reports
                    _, status = os.waitpid(child, 0)
                    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status)
                             else os.WEXITSTATUS(status))
                syscalls.set_pdeathsig(signal.SIGKILL)
            if keep_fd >= 0:
                os.set_inheritable(keep_fd, True)
            os.execve(executable, argv, env)
        except OSError as exc:
            os.write(wfd, str(exc.errno or 0).encode())
        except BaseException:  # noqa: BLE001 - the child must never return
            os.write(wfd, b"0")
        os._exit(127)
    os.close(wfd)
    try:
        data = b""
        while chunk := os.read(rfd, 64):
            data += chunk
    finally:
        os.close(rfd)
    if data:
        os.waitpid(pid, 0)
        err = int(data or b"0")
        raise OSError(err, os.strerror(err) if err else "failed before exec")
    return pid


def _wait(pid: int, timeout: float | None) -> int | None:
    """Our child's exit code (128+N for signal N); None if ``timeout`` passed (then killed)."""
    from .kernel import pidfd
    if not pidfd.wait_exit(pid, timeout):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return None
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _tail(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 1 << 16)
    text = " ".join(data.decode(errors="replace").split())
    return text[-_OUTPUT_TAIL:]


def run_hook(hook: Any, state: dict[str, Any], step: str, index: int = 0, *,
             namespaces_of: int | None = None, path_on_host: bool = False) -> None:
    """Run one hook; StepFailed if it does not exit 0."""
    h = hook_command(hook)
    where: dict[str, Any] = {"path": h.path, "index": index}
    if not h.path or not os.path.isabs(h.path):
        raise StepFailed(f"hook {step}", "path must be absolute", **where)
    argv = list(h.args) or [h.path]
    env = {key: value for key, _, value in (e.partition("=") for e in h.env)}
    stdin = _memfd("hook-state", json.dumps(state).encode())
    out = _memfd("hook-output")
    ns_fds = _namespace_fds(namespaces_of) if namespaces_of else []
    exe_fd = -1
    executable = h.path
    try:
        if ns_fds and path_on_host:
            try:
                exe_fd = os.open(h.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise StepFailed(f"hook {step}", f"cannot open: {os.strerror(exc.errno or 0)}",
                                 **where) from None
            executable = f"/proc/self/fd/{exe_fd}"
        try:
            pid = _spawn(argv, executable, env, stdin, out, ns_fds, exe_fd)
        except OSError as exc:
            raise StepFailed(f"hook {step}", f"cannot execute: {exc.strerror}", **where) from None
        code = _wait(pid, h.timeout)
        if code is None:
            raise StepFailed(f"hook {step}", f"timed out after {h.timeout}s", **where)
        if code != 0:
            if code < 0 or (ns_fds and code > 128):
                why = f"killed by signal {-code if code < 0 else code - 128}"
            else:
                why = f"exit status {code}"
            said = _tail(out)
            raise StepFailed(f"hook {step}", f"{why}{': ' + said if said else ''}", **where)
    finally:
        os.close(stdin)
        os.close(out)
        if exe_fd >= 0:
            os.close(exe_fd)
        for fd, _ in ns_fds:
            os.close(fd)


def run_hooks(hooks: Iterable[Any], state: dict[str, Any], step: str, *,
              namespaces_of: int | None = None, path_on_host: bool = False) -> None:
    """Run ``hooks`` in order with ``state`` (the OCI state JSON) on stdin.

    ``hooks`` may be execdriver.spec.Hook models, HookCommands or OCI hook dicts.
    The first failure stops the sequence and raises StepFailed naming the hook.
    """
    for i, hook in enumerate(hooks):
        run_hook(hook, state, step, i, namespaces_of=namespaces_of, path_on_host=path_on_host)


def run_hooks_warn(hooks: Iterable[Any], state: dict[str, Any], step: str, warn: Any) -> None:
    """poststart/poststop: a failure is a warning and the rest still run (runtime-spec)."""
    for i, hook in enumerate(hooks):
        try:
            run_hook(hook, state, step, i)
        except StepFailed as exc:
            warn(str(exc))
