"""The bench's single entry point: ``python -m bench [--quick] [--cases a,b]``.

Each latency case runs its two sides interleaved (A B A B ...) for N rounds
after a warm-up, and reports median, min and max of each and the ratio of the
medians; the density case starts N detached containers on each side. Results
go to a table on stdout, a JSON file and a PNG chart (--out, default
bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):          # run as a script: bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import report
from bench.cases import Context, density, latency_cases, threads
from bench.sides import BenchError, Worker
from bench.workspace import Workspace, machine_facts

ALL_CASES = ["api", "cli", "cli-cold", "cli-server", "oci", "podman", "podman-server", "docker",
             "containerd", "lxc", "chroot", "nspawn", "qemu", "threads", "density"]
#: qemu only when asked for: each of its rounds boots a VM (~9 s under TCG)
DEFAULT_CASES = [c for c in ALL_CASES if c != "qemu"]
REPO = Path(__file__).resolve().parent.parent


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds (5) and a smaller density case (50 containers)")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated subset of {','.join(ALL_CASES)} (default: all but qemu)")
    p.add_argument("--rounds", type=int, help="rounds per latency case (default 20, quick 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs of each side first")
    p.add_argument("--density", type=int, help="containers in the density case (default 1000)")
    p.add_argument("--density-rounds", type=int, help="density rounds (default 2, quick 1)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"),
                   help="directory for results.json and chart.png")
    p.add_argument("--keep", action="store_true", help="keep the /tmp workspace")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = set(args.cases) - set(ALL_CASES)
    if bad:
        p.error(f"unknown case(s): {', '.join(sorted(bad))}")
    args.rounds = args.rounds or (5 if args.quick else 20)
    args.density = args.density or (50 if args.quick else 1000)
    args.density_rounds = args.density_rounds or (1 if args.quick else 2)
    return args


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_latency(case: Any, rounds: int, warmup: int) -> dict[str, Any]:
    row: dict[str, Any] = {"name": case.name, "title": case.title,
                           "anchor_title": case.anchor_title, "target": case.target}
    why = case.unavailable()
    if why:
        log(f"{case.name}: not available: {why}")
        return {**row, "status": "not available", "reason": why}
    try:
        ours, anchor = case.build()
        for _ in range(warmup):
            ours.once()
            anchor.once()
        a: list[float] = []
        b: list[float] = []
        for _ in range(rounds):
            a.append(ours.once())
            b.append(anchor.once())
        log(f"{case.name}: ours {report.summary(a)['median'] * 1e3:.1f} ms, "
            f"{case.anchor_title} {report.summary(b)['median'] * 1e3:.1f} ms")
    except BenchError as exc:
        log(f"{case.name}: failed: {exc}")
        return {**row, "status": "failed", "reason": str(exc)}
    sa, sb = report.summary(a), report.summary(b)
    ratio = sa["median"] / sb["median"]
    return {**row, "status": "ok", "ours": sa, "anchor": sb, "ratio": ratio,
            "met": None if case.target is None else ratio <= case.target}


def leftovers(ctx: Context) -> None:
    """Remove whatever a failed run left: containers in our state roots, runc containers."""
    from execdriver import load_driver
    for name, root in ctx.state.items():
        if name.startswith("runc"):
            out = subprocess.run(["runc", "--root", root, "list", "-q"], check=False, capture_output=True,
                                 text=True)
            for cid in out.stdout.split():
                subprocess.run(["runc", "--root", root, "delete", "--force", cid], check=False,
                               capture_output=True)
            continue
        for cid in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            try:
                st = json.loads((Path(root) / cid / "state.json").read_text())
                load_driver(st.get("driver") or "native", state_root=root).terminate(cid)
            except Exception:  # noqa: BLE001, S110 - best effort
                pass


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench: needs root (containers, cgroups, runc)", file=sys.stderr)
        return 2
    ws = Workspace.create(keep=args.keep)
    log(f"workspace {ws.root}")
    worker = Worker()
    ctx = Context(ws, worker)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.rounds, "warmup": args.warmup, "quick": args.quick,
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "cases": [],
    }
    try:
        ws.build_rootfs()
        results["machine"] = machine_facts(ws.root)
        for case in latency_cases(ctx):
            if case.name in args.cases:
                log(f"{case.name}: {case.title} vs {case.anchor_title}, {args.rounds} rounds")
                results["cases"].append(run_latency(case, args.rounds, args.warmup))
        if "threads" in args.cases:
            try:
                results["threads"] = threads(ctx, 20 if args.quick else 60,
                                             3 if args.quick else 5, log)
            except BenchError as exc:
                log(f"threads: failed: {exc}")
                results["threads"] = {"status": "failed", "reason": str(exc)}
        if "density" in args.cases:
            try:
                results["density"] = density(ctx, args.density, args.density_rounds, log)
            except BenchError as exc:
                log(f"density: failed: {exc}")
                results["density"] = {"status": "failed", "reason": str(exc), "n": args.density}
    finally:
        worker.close()
        ctx.close()
        leftovers(ctx)
        ws.cleanup()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, out / "results.json")
    why = report.chart(results, out / "chart.png")
    print(report.table(results))
    print(f"\nresults: {out / 'results.json'}")
    print(f"chart:   {out / 'chart.png'}" if why is None else f"chart:   not drawn: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
