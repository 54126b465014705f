"""``stats``: resource usage once, or a live view refreshed every second."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .output import human_size, print_json, print_table

HEADERS = ("ID", "CPU %", "CPU TIME", "MEM USAGE / LIMIT", "MEM %", "PIDS", "NET RX / TX",
           "BLOCK READ / WRITE")
CLEAR = "\x1b[H\x1b[2J"


class Sampler:
    """Collects stats, keeping drivers loaded and the previous CPU sample for CPU %."""

    def __init__(self, root: str, ids: list[str]) -> None:
        self.root, self.ids = root, ids
        self.drivers: dict[str, Any] = {}
        self.prev: dict[str, tuple[int, int]] = {}

    def _driver(self, name: str) -> Any:
        from execdriver.loader import load_driver
        if name not in self.drivers:
            self.drivers[name] = load_driver(name, self.root, check_available=False)
        return self.drivers[name]

    def sample(self) -> list[dict[str, Any]]:
        from execdriver.errors import ExecDriverError
        from execdriver.state import StateStore

        if self.ids:  # named containers: their errors are the user's business
            store = StateStore(self.root)
            targets = [(cid, store.read(cid).driver) for cid in self.ids]
        else:
            from .containers import collect_infos
            targets = [(i["id"], i["driver"]) for i in collect_infos(self.root)
                       if i["status"] in ("running", "paused")]
        out = []
        for cid, driver_name in targets:
            if not driver_name and self.ids:
                from .containers import driver_for
                driver_for(self.root, cid)  # raises the "creation did not finish" error
            try:
                stats = self._driver(driver_name).stats(cid).to_dict()
            except ExecDriverError:
                if self.ids:
                    raise
                continue  # stopped or vanished since we listed it
            stats["cpu_percent"] = self._cpu_percent(cid, stats.get("cpu_usage_ns"))
            out.append(stats)
        return out

    def _cpu_percent(self, cid: str, cpu_ns: int | None) -> float | None:
        now = time.monotonic_ns()
        prev = self.prev.get(cid)
        if cpu_ns is None:
            return None
        self.prev[cid] = (cpu_ns, now)
        if prev is None or now <= prev[1]:
            return None
        return round(100.0 * (cpu_ns - prev[0]) / (now - prev[1]), 1)


def _pair(a: Any, b: Any) -> str:
    return f"{human_size(a)} / {human_size(b)}"


def row(s: dict[str, Any]) -> tuple[Any, ...]:
    mem, limit = s.get("memory_usage"), s.get("memory_limit")
    mem_pct = f"{100.0 * mem / limit:.1f}" if mem is not None and limit else "-"
    cpu_ns = s.get("cpu_usage_ns")
    nets = (s.get("networks") or {}).values()
    rx = sum(n.get("rx_bytes", 0) for n in nets) if nets else None
    tx = sum(n.get("tx_bytes", 0) for n in nets) if nets else None
    pids = s.get("pids_current")
    if pids is not None and s.get("pids_limit"):
        pids = f"{pids} / {s['pids_limit']}"
    cpu_pct = s.get("cpu_percent")
    return (s["id"], "-" if cpu_pct is None else f"{cpu_pct:.1f}",
            "-" if cpu_ns is None else f"{cpu_ns / 1e9:.2f}s",
            _pair(mem, limit) if limit else human_size(mem), mem_pct, pids,
            _pair(rx, tx), _pair(s.get("blkio_read_bytes"), s.get("blkio_write_bytes")))


def cmd_stats(args: argparse.Namespace) -> int:
    sampler = Sampler(args.root, list(args.ids))
    if not args.watch:
        stats = sampler.sample()
        if args.format == "json":
            print_json(stats)
        else:
            print_table(HEADERS, [row(s) for s in stats])
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            stats = sampler.sample()
            if args.format == "json":
                print(json.dumps({"time": time.time(), "stats": stats}, sort_keys=True), flush=True)
            else:
                if tty:
                    sys.stdout.write(CLEAR)
                print(time.strftime("%H:%M:%S") + "  (Ctrl-C to stop)")
                print_table(HEADERS, [row(s) for s in stats])
                if not tty:
                    print()
                sys.stdout.flush()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
