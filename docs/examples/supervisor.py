"""A small supervisor on execdriver's API: keeps services running, restarting the ones
that fail (with a back-off and a restart limit), and stops them all on SIGTERM/SIGINT.

    python docs/examples/supervisor.py --rootfs ROOTFS --max-restarts 3 \\
        web='httpd -f -p 8080' worker='sh -c "do-work || exit 1"'

Each service runs detached (it would outlive a crashed supervisor, as a real one's
should); the supervisor waits on all of them at once with asyncio, and prints one
line per event. Exit status: 0 when every service ended well, 1 when one gave up.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys

import execdriver
from execdriver.aio import AsyncDriver


async def supervise(d: AsyncDriver, name: str, spec: execdriver.Spec, max_restarts: int,
                    backoff: float) -> bool:
    """Run ``name`` until it exits 0; restart it on failure up to ``max_restarts`` times."""
    for attempt in range(max_restarts + 1):
        cid = f"{name}-{attempt}"
        async with d.started(cid, spec, detach=True) as handle:
            print(f"{name}: started ({cid}, pid {handle.pid})", flush=True)
            status = await handle.wait()
        assert status is not None
        if status.exit_code == 0:
            print(f"{name}: done", flush=True)
            return True
        why = f"killed by signal {status.signal}" if status.signal else f"exit {status.code}"
        if status.oom_killed:
            why += " (out of memory)"
        print(f"{name}: failed: {why}", flush=True)
        if attempt < max_restarts:
            await asyncio.sleep(backoff * 2 ** attempt)
    print(f"{name}: gave up after {max_restarts} restarts", flush=True)
    return False


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rootfs", required=True)
    p.add_argument("--driver", default="native")
    p.add_argument("--state-root", help="execdriver state directory (default: the driver's)")
    p.add_argument("--max-restarts", type=int, default=3)
    p.add_argument("--backoff", type=float, default=0.5, help="first restart delay, doubling")
    p.add_argument("services", nargs="+", metavar="NAME=COMMAND")
    args = p.parse_args(argv)
    d = AsyncDriver(execdriver.load_driver(args.driver, state_root=args.state_root))
    tasks = []
    for item in args.services:
        name, _, command = item.partition("=")
        spec = d.driver.default_spec(args.rootfs, shlex.split(command))
        tasks.append(asyncio.create_task(
            supervise(d, name, spec, args.max_restarts, args.backoff)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Cancelling a supervise() task terminates its container (AsyncDriver.started).
        loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return 0 if all(r is True for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except execdriver.ExecDriverError as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        sys.exit(2)
