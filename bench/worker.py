"""The embedded-API side: one long-lived Python process running containers.

Started by the harness as ``python -m bench.worker``; reads one JSON request a
line on stdin and answers one JSON line on stdout. Drivers are loaded and specs
validated once per (driver, command), so what a request times is only the
per-container work of ``driver.run`` / ``start`` -- as in an orchestrator that
embeds execdriver. Containers get /dev/null as stdio (the protocol owns fd 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench.memory import smaps_rollup

_drivers: dict[str, Any] = {}
_specs: dict[tuple[str, tuple[str, ...]], Any] = {}
_devnull = -1


def _driver(name: str, state_root: str) -> Any:
    key = f"{name}:{state_root}"
    if key not in _drivers:
        from execdriver import load_driver
        _drivers[key] = load_driver(name, state_root=state_root)
    return _drivers[key]


def _spec(driver: Any, rootfs: str, args: list[str]) -> Any:
    key = (driver.name, tuple(args))
    if key not in _specs:
        from bench.workspace import MEMORY_LIMIT, PIDS_LIMIT, spec_dict
        from execdriver import validate_spec
        if driver.name == "chroot":
            spec = driver.default_spec(rootfs, args)
            spec.resources.memory.limit = MEMORY_LIMIT
            spec.resources.pids.limit = PIDS_LIMIT
            spec = validate_spec(spec.model_dump())
        elif driver.name in ("nspawn", "qemu"):   # no resources.* (nspawn: --property needs
            # systemd; qemu: the VM's size is its limit, the default one)
            spec = driver.default_spec(rootfs, args)
        else:
            spec = validate_spec(spec_dict(rootfs, args))
        _specs[key] = spec
    return _specs[key]


def _stdio() -> Any:
    from execdriver import Stdio
    return Stdio(_devnull, _devnull, _devnull)


def op_run(req: dict[str, Any]) -> dict[str, Any]:
    d = _driver(req["driver"], req["state_root"])
    spec = _spec(d, req["rootfs"], req["args"])
    t0 = time.perf_counter()
    status = d.run(req["id"], spec, stdio=_stdio())
    dt = time.perf_counter() - t0
    return {"seconds": dt, "exit": status.exit_code}


def op_threads(req: dict[str, Any]) -> dict[str, Any]:
    """``n`` runs of ``driver.run`` from ``threads`` threads at once: runs per second."""
    from concurrent.futures import ThreadPoolExecutor
    d = _driver(req["driver"], req["state_root"])
    spec = _spec(d, req["rootfs"], req["args"])
    ids = [f"{req['prefix']}-{i}" for i in range(req["n"])]

    def one(cid: str) -> int:
        return int(d.run(cid, spec, stdio=_stdio()).exit_code)
    with ThreadPoolExecutor(req["threads"]) as pool:
        t0 = time.perf_counter()
        codes = list(pool.map(one, ids))
        dt = time.perf_counter() - t0
    return {"seconds": dt, "runs_per_second": len(ids) / dt,
            "failed": sum(1 for c in codes if c != 0)}


def op_density(req: dict[str, Any]) -> dict[str, Any]:
    """Start N detached containers, list them, stats of each, measure the monitors, terminate."""
    d = _driver(req["driver"], req["state_root"])
    spec = _spec(d, req["rootfs"], req["args"])
    ids = [f"{req['prefix']}-{i}" for i in range(req["n"])]
    out: dict[str, Any] = {}
    started: list[str] = []
    try:
        t0 = time.perf_counter()
        for cid in ids:
            d.start(cid, spec, stdio=_stdio(), detach=True)
            started.append(cid)
        out["start_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        listed = d.list()
        out["list_seconds"] = time.perf_counter() - t0
        out["listed_running"] = sum(1 for i in listed if i.status.value == "running")
        t0 = time.perf_counter()
        stats = [d.stats(cid) for cid in ids]
        out["stats_seconds"] = time.perf_counter() - t0
        out["stats_with_memory"] = sum(1 for s in stats if s.memory_usage is not None)
        if req.get("cli"):
            # The same 500 through the CLI (a cold process each), while they run.
            import subprocess
            for verb in ("list", "stats"):
                t0 = time.perf_counter()
                proc = subprocess.run([req["cli"], verb, "--root", req["state_root"], "--format",
                                       "json"], check=False, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                out[f"cli_{verb}_seconds"] = time.perf_counter() - t0
                out[f"cli_{verb}_ok"] = proc.returncode == 0
        monitors = []
        for cid in ids:
            st = d.state.read(cid)
            monitors.append(st.monitor_pid)
        out["memory"] = [smaps_rollup(pid) for pid in monitors if pid]
        out["worker_memory"] = smaps_rollup(os.getpid())
    finally:
        t0 = time.perf_counter()
        errors = 0
        for cid in started:
            try:
                d.terminate(cid)
            except Exception:  # noqa: BLE001 - count, keep cleaning
                errors += 1
        out["terminate_seconds"] = time.perf_counter() - t0
        out["terminate_errors"] = errors
    return out


def main() -> int:
    global _devnull
    _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    # Nothing but the protocol may write to the pipe: fd 1 and 2 go to /dev/null.
    os.dup2(_devnull, 1)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "run":
                resp = op_run(req)
            elif req["op"] == "density":
                resp = op_density(req)
            elif req["op"] == "threads":
                resp = op_threads(req)
            elif req["op"] == "quit":
                break
            else:
                resp = {"error": f"unknown op {req['op']}"}
        except Exception as exc:  # noqa: BLE001 - the harness reports it
            resp = {"error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(resp) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
