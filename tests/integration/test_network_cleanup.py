"""Cleanup: after SIGKILL at any point of setup, after failures, after many cycles.

Each test runs in a scratch netns; the fixture checks afterwards that no veth,
bridge, nftables table or rule, or lease of ours is left.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import pytest
from scratch_netns import ScratchNetns

from execdriver.kernel import network
from execdriver.kernel.network import links
from execdriver.spec import Network, PortMapping

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("host_netns_untouched")]

FULL = Network(mode="bridge", ports=[PortMapping.parse("8080:80"), PortMapping.parse("53:53/udp")],
               isolate=True, mtu=1450)


def plan_record(cid: str, net: Network, root: Path) -> dict[str, Any]:
    return network.plan(cid, net, root).record()


# -- SIGKILL at chosen points -------------------------------------------------------------

class _DyingIPRoute:
    """An IPRoute whose process is SIGKILLed right after a chosen link request."""

    def __init__(self, real: Any, when: Callable[[str, dict[str, Any]], bool]) -> None:
        self.real, self.when = real, when

    def link(self, cmd: str, **kw: Any) -> Any:
        out = self.real.link(cmd, **kw)
        if self.when(cmd, kw):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __enter__(self) -> Self:
        self.real.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self.real.__exit__(*exc)


def setup_and_die(record: dict[str, Any], pid: int, point: str) -> None:
    """Run setup in this (forked) process and SIGKILL it at ``point``."""
    from execdriver.kernel.network import firewall, lifecycle

    def die_after(mod: Any, name: str) -> None:
        orig = getattr(mod, name)

        def wrapped(*a: Any, **k: Any) -> Any:
            orig(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(mod, name, wrapped)

    def die_on_link(pred: Callable[[str, dict[str, Any]], bool]) -> None:
        orig = links._iproute
        links._iproute = lambda: _DyingIPRoute(orig(), pred)

    if point == "bridge-created":    # before the alias marks it ours
        die_on_link(lambda cmd, kw: cmd == "add" and kw.get("kind") == "bridge")
    elif point == "bridge-ready":
        die_after(links, "ensure_bridge")
    elif point == "bridge-rules":
        die_after(firewall, "install_bridge")
    elif point == "veth-created":    # peer inside, host end not yet on the bridge
        die_on_link(lambda cmd, kw: cmd == "add" and kw.get("kind") == "veth")
    elif point == "inside-configured":
        die_after(links, "configure_container")
    elif point == "container-rules":
        die_after(firewall, "install_container")
    else:
        raise ValueError(point)
    lifecycle.setup(record, pid)
    os.kill(os.getpid(), signal.SIGKILL)  # a point that was never reached still dies


POINTS = ["lease-only", "bridge-created", "bridge-ready", "bridge-rules", "veth-created",
          "inside-configured", "container-rules"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("neighbour", [False, True], ids=["alone", "with-neighbour"])
def test_sigkill_mid_setup_then_teardown_from_record(
        ns: ScratchNetns, state_root: Path, point: str, neighbour: bool) -> None:
    if neighbour:  # another container keeps the bridge in use
        n = ns.spawn_container()
        rn = ns.call(plan_record, "neighbour", Network(mode="bridge"), state_root)
        ns.call(network.setup, rn, n.pid)
    c = ns.spawn_container()
    rec = ns.call(plan_record, "victim", FULL, state_root)  # stored before anything exists
    if point != "lease-only":
        with pytest.raises(RuntimeError, match="died"):
            ns.call(setup_and_die, rec, c.pid, point)
    left = ns.leftovers(state_root)
    assert "execdriver0:victim" in left["leases"]
    # the kill really left things behind for teardown to find
    if POINTS.index(point) >= POINTS.index("bridge-created"):
        assert ns.call(links.link_exists, "execdriver0")
    if point == "bridge-created" and not neighbour:
        assert left["bridges"] == []  # not yet aliased: only the IPAM mark says it is ours
    if POINTS.index(point) >= POINTS.index("veth-created"):
        assert rec["host_if"] in left["veths"]
        assert ns.call(links.link_names, c.pid) == ["eth0", "lo"]
    ns.call(network.teardown, rec)
    ns.call(network.teardown, rec)  # idempotent
    assert ns.call(links.link_names, c.pid) == ["lo"]  # the container is alive, eth0 gone
    if neighbour:
        left = ns.leftovers(state_root)
        assert left["leases"] == ["execdriver0:neighbour"] and left["bridges"] == ["execdriver0"]
        assert ns.exec_in(n.pid, ["busybox", "ping", "-c", "1", "-W", "2", "10.88.0.1"]).returncode == 0
        ns.call(network.teardown, rn)
        ns.kill(n)
    ns.kill(c)


def test_sigkill_at_random_moments(ns: ScratchNetns, state_root: Path) -> None:
    c = ns.spawn_container()
    rec = ns.call(plan_record, "timing", FULL, state_root)
    start = time.monotonic()
    ns.call(network.setup, rec, c.pid)
    full = time.monotonic() - start
    ns.call(network.teardown, rec)
    killed = 0
    for i in range(24):
        rec = ns.call(plan_record, "timing", FULL, state_root)
        try:
            ns.call(network.setup, rec, c.pid, timeout=full * i / 20)
        except TimeoutError:
            killed += 1
        ns.call(network.teardown, rec)
        left = ns.leftovers(state_root)
        assert not any(left.values()), (i, left)
        assert ns.call(links.link_names, c.pid) == ["lo"]
    assert killed >= 5
    ns.kill(c)


def test_reclaim_orphans_takes_only_leases_without_state(ns: ScratchNetns, state_root: Path) -> None:
    ghost, alive = ns.spawn_container(), ns.spawn_container()
    (state_root / "alive").mkdir()
    rg = ns.call(plan_record, "ghost", FULL, state_root)
    ra = ns.call(plan_record, "alive", Network(mode="bridge"), state_root)
    ns.call(network.setup, rg, ghost.pid)
    ns.call(network.setup, ra, alive.pid)
    assert ns.call(network.reclaim_orphans, state_root) == ["ghost"]
    left = ns.leftovers(state_root)
    assert left["leases"] == ["execdriver0:alive"] and left["veths"] == [ra["host_if"]]
    assert ns.call(links.link_names, ghost.pid) == ["lo"]
    rules = [i["rule"].get("comment") for i in ns.ruleset() if "rule" in i]
    assert "execdriver id=ghost" not in rules
    ns.call(network.teardown, ra)
    ns.kill(ghost)
    ns.kill(alive)


# -- many at once, many in a row ------------------------------------------------------------

def _spawn_container() -> subprocess.Popen[bytes]:
    """From inside the scratch netns: a sleeping process in a netns of its own."""
    me = os.stat("/proc/self/ns/net").st_ino
    proc = subprocess.Popen(["unshare", "--net", "sleep", "100000"])
    for _ in range(2000):
        try:
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino != me:
                return proc
        except FileNotFoundError:
            break
        time.sleep(0.002)
    proc.kill()
    raise RuntimeError("stand-in container did not start")


def _parallel_worker(root: str, cid: str, pid: int, out: str) -> None:
    rec = network.plan(cid, Network(mode="bridge", ports=[
        PortMapping(host_port=10000 + int(cid[1:]), container_port=80)]), Path(root)).record()
    network.setup(rec, pid)
    Path(out).write_text(json.dumps(rec))


def _teardown_worker(path: str) -> None:
    network.teardown(json.loads(Path(path).read_text()))


def parallel_scenario(root: str, tmp: str, n: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    procs = [_spawn_container() for _ in range(n)]
    try:
        outs = [f"{tmp}/rec{i}.json" for i in range(n)]
        workers = [ctx.Process(target=_parallel_worker, args=(root, f"p{i}", procs[i].pid, outs[i]))
                   for i in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        codes = [w.exitcode for w in workers]
        recs = [json.loads(Path(o).read_text()) for o in outs if Path(o).exists()]
        addrs = [r["addresses"][0].split("/")[0] for r in recs]
        pings = [subprocess.run(["nsenter", f"--net=/proc/{procs[i].pid}/ns/net", "busybox", "ping",
                                 "-c", "1", "-W", "2", addrs[(i + 1) % n]],
                                check=False, capture_output=True).returncode
                 for i in range(len(recs))]
        mid = network.leftovers(root)
        workers = [ctx.Process(target=_teardown_worker, args=(o,)) for o in outs]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        return {"codes": codes, "addrs": addrs, "pings": pings, "mid": mid,
                "teardown_codes": [w.exitcode for w in workers]}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_parallel_setups_and_teardowns(ns: ScratchNetns, state_root: Path, tmp_path: Path) -> None:
    n = 8
    res = ns.call(parallel_scenario, str(state_root), str(tmp_path), n)
    assert res["codes"] == [0] * n and res["teardown_codes"] == [0] * n
    assert len(set(res["addrs"])) == n
    assert res["pings"] == [0] * n
    assert len(res["mid"]["veths"]) == n and res["mid"]["bridges"] == ["execdriver0"]


def cycles(root: str, count: int) -> dict[str, Any]:
    """plan/setup/teardown ``count`` times; a neighbour holds the bridge for the 2nd half."""
    rootp = Path(root)
    neighbour = None
    checks = []
    start = time.monotonic()
    try:
        for i in range(count):
            if i == count // 2:
                neighbour = _spawn_container()
                rn = network.plan("neighbour", Network(mode="bridge"), rootp).record()
                network.setup(rn, neighbour.pid)
            c = _spawn_container()
            net = FULL if i % 2 else Network(mode="bridge")
            rec = network.plan(f"cycle-{i}", net, rootp).record()
            network.setup(rec, c.pid)
            network.teardown(rec)
            c.kill()
            c.wait()
            if i % 25 == 24:
                checks.append((i, network.leftovers(root)))
        if neighbour is not None:
            network.teardown(rn)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return {"checks": checks, "seconds": time.monotonic() - start,
            "links": links.link_names(), "final": network.leftovers(root)}


def test_two_hundred_cycles_leak_nothing(ns: ScratchNetns, state_root: Path) -> None:
    res = ns.call(cycles, str(state_root), 200, timeout=600)
    for i, left in res["checks"]:
        if i < 100:
            assert not any(left.values()), (i, left)
        else:  # only the neighbour's things
            assert left["veths"] == [network.veth_name("neighbour")], (i, left)
            assert left["leases"] == ["execdriver0:neighbour"], (i, left)
            assert left["bridges"] == ["execdriver0"] and left["tables"] == ["inet execdriver"]
    assert res["links"] == ["lo"]
    assert not any(res["final"].values())
    print(f"200 cycles in {res['seconds']:.1f}s")
