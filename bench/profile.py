"""Where a native container's start-to-exit time goes: ``python -m bench.profile``.

``phases`` (default) wraps the hot functions of the parent, stage-1 and the
container init with timestamps written to a MAP_SHARED page, so the forked
processes' phases are seen too (a profiler in the parent only sees it waiting
on the sync socket). ``pyinstrument`` profiles the parent's Python. Both run
``driver.run(true)`` back to back with the bench workload, in a private
workspace. The wrappers live in this process only; nothing is changed on disk.
"""

from __future__ import annotations

import argparse
import functools
import mmap
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_SHM = mmap.mmap(-1, 1 << 20)          # shared with the forked children
_NAMES: list[str] = []
_REC = struct.Struct("QQQ")             # time ns, label index, pid


def _label(name: str) -> int:
    if name not in _NAMES:
        _NAMES.append(name)             # only ever called before the fork
    return _NAMES.index(name)


def _event(idx: int) -> None:
    n = struct.unpack_from("Q", _SHM, 0)[0]
    if 8 + (n + 1) * _REC.size <= len(_SHM):
        _REC.pack_into(_SHM, 8 + n * _REC.size, time.perf_counter_ns(), idx, os.getpid())
        struct.pack_into("Q", _SHM, 0, n + 1)


def _wrap(owner: Any, attr: str, label: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is None:                      # renamed since: that phase is simply not shown
        return
    start, end = _label(label + ">"), _label(label + "<")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _event(start)
        try:
            return fn(*args, **kwargs)
        finally:
            _event(end)
    setattr(owner, attr, wrapper)


def install_probes() -> None:
    from execdriver import state
    from execdriver.kernel import capabilities, devices, init, launch, mounts, seccomp, sync, syscalls
    from execdriver.libcontainer.container import Container
    probes = [
        (state, "write_atomic", "parent: state write+fsync"),
        (Container, "_create", "parent: cgroup create+apply, spawn, state"),
        (Container, "_cleanup", "parent: terminate (cgroup destroy, state rm)"),
        (Container, "exit_status", "parent: read exit status"),
        (launch, "spawn", "parent: launch.spawn (until exec)"),
        (init, "_write", "stage1/init: small writes (cgroup.procs joins)"),
        (syscalls, "unshare", "stage1/init: unshare"),
        (os, "fork", "fork (parent or stage1)"),
        (init, "loopback_up", "init: lo up"),
        (init, "setup_rootfs", "init: setup_rootfs (all mounts, pivot)"),
        (mounts, "pivot_into", "init: pivot_root"),
        (devices, "populate_dev", "init: /dev nodes"),
        (init, "mount_cgroups", "init: cgroupfs view"),
        (capabilities, "apply_user", "init: capabilities+ids"),
        (seccomp, "install", "init: seccomp install"),
        (sync, "expect", "parent/init: wait for sync message"),
    ]
    for owner, attr, label in probes:
        _wrap(owner, attr, label)


def phases(n: int, rootfs: str, state_root: str) -> None:
    install_probes()
    from bench.workspace import spec_dict
    from execdriver import Stdio, load_driver, validate_spec
    d = load_driver("native", state_root=state_root)
    spec = validate_spec(spec_dict(rootfs, ["/bin/true"]))
    null = os.open(os.devnull, os.O_RDWR)
    stdio = Stdio(null, null, null)
    total_label = _label("RUN>"), _label("RUN<")
    for i in range(3):
        d.run(f"warm{i}", spec, stdio=stdio)
    sums: dict[str, list[float]] = {}
    for i in range(n):
        struct.pack_into("Q", _SHM, 0, 0)
        _event(total_label[0])
        d.run(f"prof{i}", spec, stdio=stdio)
        _event(total_label[1])
        count = struct.unpack_from("Q", _SHM, 0)[0]
        events = sorted(_REC.unpack_from(_SHM, 8 + j * _REC.size) for j in range(count))
        open_: dict[tuple[str, int], list[int]] = {}
        for t, idx, pid in events:
            name = _NAMES[idx]
            key = (name[:-1], pid)
            if name.endswith(">"):
                open_.setdefault(key, []).append(t)
            elif open_.get(key):
                sums.setdefault(name[:-1], []).append((t - open_[key].pop()) / 1e6)
    print(f"native driver.run(/bin/true), {n} runs; ms per run (summed over calls)\n")
    print(f"{'phase':52s} {'ms/run':>8s} {'calls/run':>9s}")
    for name, vals in sorted(sums.items(), key=lambda kv: -sum(kv[1])):
        print(f"{name:52s} {sum(vals) / n:8.2f} {len(vals) / n:9.1f}")
    print("\nNested phases overlap (spawn contains the children's phases; waits contain "
          "the other side's work).")


def pyinstrument_profile(n: int, rootfs: str, state_root: str) -> None:
    from pyinstrument import Profiler

    from bench.workspace import spec_dict
    from execdriver import Stdio, load_driver, validate_spec
    d = load_driver("native", state_root=state_root)
    spec = validate_spec(spec_dict(rootfs, ["/bin/true"]))
    null = os.open(os.devnull, os.O_RDWR)
    d.run("warm", spec, stdio=Stdio(null, null, null))
    prof = Profiler(interval=0.0005)
    prof.start()
    for i in range(n):
        d.run(f"prof{i}", spec, stdio=Stdio(null, null, null))
    prof.stop()
    print(prof.output_text(unicode=False, color=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("mode", nargs="?", default="phases", choices=["phases", "pyinstrument"])
    p.add_argument("-n", type=int, default=30, help="containers to run")
    args = p.parse_args(argv)
    from bench.workspace import Workspace
    ws = Workspace.create()
    try:
        rootfs = str(ws.build_rootfs())
        state_root = str(ws.path("state"))
        if args.mode == "phases":
            phases(args.n, rootfs, state_root)
        else:
            pyinstrument_profile(args.n, rootfs, state_root)
    finally:
        ws.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
