"""An embedding program that creates one container and gets SIGKILLed on the way.

    python crash_child.py '<json>'

The JSON says: root, driver, id, rootfs, marker, mode (``start``: detached
start; ``run``: foreground run), network (``none``/``bridge``), netns (a
namespace file to enter first, for bridge mode), and ``kill_at``:

- ``null``: do the create and write to the file ``report`` how long it took and
  which execdriver functions it called, at which line-event index
  (``{"ms", "lines", "calls"}``).
- an int N: count the "line" events executed in execdriver's own code (this
  process only, not its forks) and SIGKILL ourselves at the N-th one: a crash
  point that is the same from run to run.

The parent sends a byte on stdin to start (so imports are not part of the
timing); a parent that kills by timer just waits after sending it. ``user`` (a
uid, capabilities cleared) and ``userns`` (a user namespace mapped to 100000+)
vary the container's identity.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("netns"):
        from execdriver.kernel import syscalls
        fd = os.open(cfg["netns"], os.O_RDONLY | os.O_CLOEXEC)
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
        os.close(fd)
    from execdriver.driver import Stdio
    from execdriver.loader import load_driver
    driver = load_driver(cfg["driver"], state_root=cfg["root"])
    spec = driver.default_spec(cfg["rootfs"], cfg.get("args") or ["/bin/sleep", "1000"])
    spec.process.env["EDHARD"] = cfg["marker"]
    if cfg.get("network", "none") != "none":
        spec.network.mode = cfg["network"]
    if cfg.get("user") is not None:
        spec.process.user.uid = spec.process.user.gid = int(cfg["user"])
        spec.process.capabilities = spec.process.capabilities.with_changes([], ["ALL"])
    if cfg.get("userns"):
        from execdriver.spec import IDMapping, Namespace
        spec.namespaces.append(Namespace(type="user"))
        spec.uid_mappings = [IDMapping(container_id=0, host_id=100000, size=65536)]
        spec.gid_mappings = [IDMapping(container_id=0, host_id=100000, size=65536)]
    null = os.open(os.devnull, os.O_RDWR)
    stdio = Stdio(null, null, null)
    # Warm every lazy import the create will need, so that tracing counts our code only.
    import execdriver.kernel.cgroups.v1
    import execdriver.kernel.launch
    if cfg.get("network") == "bridge":
        import execdriver.kernel.network  # noqa: F401
    print("ready", flush=True)
    sys.stdin.buffer.read(1)

    tracer = _Tracer(cfg.get("kill_at"))
    t0 = time.monotonic()
    if cfg.get("trace", True):
        sys.settrace(tracer.global_trace)
    try:
        if cfg.get("mode", "start") == "run":
            driver.run(cfg["id"], spec, stdio=stdio)
        else:
            driver.start(cfg["id"], spec, stdio=stdio, detach=True)
    finally:
        sys.settrace(None)
    ms = (time.monotonic() - t0) * 1000
    with open(cfg["report"], "w") as f:     # a file: the report can outgrow a pipe's buffer
        json.dump({"ms": ms, "lines": tracer.lines, "calls": tracer.calls}, f)
    os._exit(0)


class _Tracer:
    """Counts line events in execdriver's code; SIGKILLs this process at line ``kill_at``."""

    def __init__(self, kill_at: int | None) -> None:
        import execdriver
        self.kill_at = kill_at
        self.pid = os.getpid()
        here = os.path.dirname(os.path.dirname(os.path.abspath(execdriver.__file__)))
        self.prefixes = (os.path.join(here, "execdriver") + os.sep,
                         os.path.join(here, "drivers") + os.sep)
        self.lines = 0
        self.calls: list[tuple[int, str]] = []    # (line index, "dir/file.py:qualname")

    def global_trace(self, frame, event, arg):
        if os.getpid() != self.pid:          # a fork of ours (stage-1, monitor): leave it alone
            sys.settrace(None)
            return None
        if not frame.f_code.co_filename.startswith(self.prefixes):
            return None
        if self.kill_at is None:
            rel = frame.f_code.co_filename.rsplit(os.sep, 2)
            self.calls.append((self.lines, f"{rel[-2]}/{rel[-1]}:{frame.f_code.co_qualname}"))
        return self.local_trace

    def local_trace(self, frame, event, arg):
        if event == "line":
            self.lines += 1
            if self.kill_at is not None and self.lines >= self.kill_at \
                    and os.getpid() == self.pid:
                os.kill(self.pid, signal.SIGKILL)
        return self.local_trace


if __name__ == "__main__":
    main()
