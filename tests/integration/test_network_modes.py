"""Network modes other than a plain bridge, and setup errors, in a scratch netns."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from netns_helpers import plan_and_setup
from scratch_netns import NetnsCallError, ScratchNetns

from execdriver.kernel import network
from execdriver.kernel.network import links
from execdriver.spec import Network, PortMapping, Route

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("host_netns_untouched")]


def lo_state(pid: int) -> tuple[list[str], str]:
    def body(ipr: Any) -> tuple[list[str], str]:
        names = sorted(lk.get("ifname") for lk in ipr.get_links())
        lo = ipr.get_links(ipr.link_lookup(ifname="lo")[0])[0]
        return names, lo.get("operstate") if lo.get("flags") & 1 else "DOWN"
    return links.in_netns(pid, body)


def test_none_mode_has_only_loopback_up(ns: ScratchNetns, state_root: Path) -> None:
    c = ns.spawn_container()
    assert ns.call(lo_state, c.pid)[1] == "DOWN"  # a fresh netns: lo is down
    rec = ns.call(plan_and_setup, "quiet", Network(mode="none"), state_root, c.pid)
    names, state = ns.call(lo_state, c.pid)
    assert names == ["lo"] and state in ("UNKNOWN", "UP")
    r = ns.exec_in(c.pid, ["busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1"])
    assert r.returncode == 0, r.stderr
    r = ns.exec_in(c.pid, ["busybox", "ping", "-c", "1", "-W", "1", "10.88.0.1"])
    assert r.returncode != 0
    assert set(network.interface_stats(c.pid)) == {"lo"}
    ns.call(network.teardown, rec)  # nothing to do, and no error
    ns.kill(c)


@pytest.mark.parametrize("net", [Network(mode="host"), Network(mode="container", container="x"),
                                 Network(mode="netns", netns_path="/run/netns/whatever")],
                         ids=["host", "container", "netns"])
def test_joining_modes_build_nothing(ns: ScratchNetns, state_root: Path, net: Network) -> None:
    c = ns.spawn_container()
    rec = ns.call(plan_and_setup, "joiner", net, state_root, c.pid)
    assert rec["mode"] == net.mode and rec["addresses"] == []
    assert ns.call(links.link_names, c.pid) == ["lo"]
    ns.call(network.teardown, rec)
    ns.kill(c)


def _error(exc: NetnsCallError) -> str:
    assert exc.type_name == "StepFailed", exc.traceback
    return exc.message


def test_setup_for_a_dead_pid_fails_and_leaves_only_the_lease(
        ns: ScratchNetns, state_root: Path) -> None:
    c = ns.spawn_container()
    ns.kill(c)
    rec = ns.call(lambda: network.plan("ghost", Network(mode="bridge"), state_root).record())
    with pytest.raises(NetnsCallError) as err:
        ns.call(network.setup, rec, c.pid)
    assert _error(err.value) == f"network netns pid={c.pid}: No such file or directory"
    left = ns.leftovers(state_root)
    assert left["veths"] == [] and left["leases"] == ["execdriver0:ghost"]
    ns.call(network.teardown, rec)


def test_pid_in_the_runtimes_own_netns_is_refused(ns: ScratchNetns, state_root: Path) -> None:
    same = ns.spawn(["sleep", "100000"])
    time.sleep(0.1)
    for mode in ("bridge", "none"):
        rec = ns.call(lambda m=mode: network.plan("same", Network(mode=m), state_root).record())
        with pytest.raises(NetnsCallError) as err:
            ns.call(network.setup, rec, same.pid)
        assert _error(err.value) == (f"network netns pid={same.pid}: the container shares the "
                                     "runtime's network namespace")
        ns.call(network.teardown, rec)
    ns.kill(same)


def test_eth0_taken_inside_names_the_veth(ns: ScratchNetns, state_root: Path) -> None:
    c = ns.spawn_container()

    def squat(ipr: Any) -> None:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth1"})
    ns.call(links.in_netns, c.pid, squat)
    rec = ns.call(lambda: network.plan("squatted", Network(mode="bridge"), state_root).record())
    with pytest.raises(NetnsCallError) as err:
        ns.call(network.setup, rec, c.pid)
    assert _error(err.value) == (f"network veth interface={rec['host_if']} peer=eth0: "
                                 "File exists")
    assert ns.leftovers(state_root)["veths"] == []
    ns.call(network.teardown, rec)
    ns.kill(c)


def test_unreachable_route_fails_and_rolls_back(ns: ScratchNetns, state_root: Path) -> None:
    c = ns.spawn_container()
    net = Network(mode="bridge", ports=[PortMapping.parse("8080:80")], isolate=True,
                  routes=[Route(destination="192.168.9.0/24", gateway="10.99.0.1")])
    rec = ns.call(lambda: network.plan("badroute", net, state_root).record())
    with pytest.raises(NetnsCallError) as err:
        ns.call(network.setup, rec, c.pid)
    assert _error(err.value) == ("network route interface=eth0 destination=192.168.9.0/24 "
                                 "gateway=10.99.0.1: Network is unreachable")
    # the failed setup removed its veth and its rules; the lease waits for teardown
    left = ns.leftovers(state_root)
    assert left["veths"] == [] and left["leases"] == ["execdriver0:badroute"]
    assert ns.call(links.link_names, c.pid) == ["lo"]  # the peer went with the veth
    rules = [i["rule"] for i in ns.ruleset() if "rule" in i]
    assert not [r for r in rules if r.get("comment") == "execdriver id=badroute"]
    ns.call(network.teardown, rec)
    ns.kill(c)


def test_name_taken_by_a_non_bridge(ns: ScratchNetns, state_root: Path) -> None:
    def make_dummy() -> None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            ipr.link("add", ifname="notabridge", kind="veth", peer={"ifname": "notabridge1"})
    ns.call(make_dummy)
    c = ns.spawn_container()
    rec = ns.call(lambda: network.plan("x", Network(mode="bridge", bridge="notabridge"),
                                       state_root).record())
    with pytest.raises(NetnsCallError) as err:
        ns.call(network.setup, rec, c.pid)
    assert _error(err.value) == "network bridge bridge=notabridge: exists and is not a bridge"
    ns.call(network.teardown, rec)
    assert ns.call(links.link_exists, "notabridge")  # someone else's: left alone
    ns.call(links.delete_link, "notabridge")
    ns.kill(c)


def test_someone_elses_bridge_is_used_and_kept(ns: ScratchNetns, state_root: Path) -> None:
    def make_bridge() -> None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            ipr.link("add", ifname="userbr", kind="bridge")
            idx = ipr.link_lookup(ifname="userbr")[0]
            ipr.addr("add", index=idx, address="10.50.0.1", prefixlen=24)
            ipr.link("set", index=idx, state="up")
    ns.call(make_bridge)
    c = ns.spawn_container()
    net = Network(mode="bridge", bridge="userbr", subnet="10.50.0.0/24")
    rec = ns.call(plan_and_setup, "guest", net, state_root, c.pid)
    assert rec["addresses"] == ["10.50.0.2/24"]
    assert ns.exec_in(c.pid, ["busybox", "ping", "-c", "1", "-W", "2", "10.50.0.1"]).returncode == 0
    assert ns.leftovers(state_root)["bridges"] == []  # not marked ours
    ns.call(network.teardown, rec)
    assert ns.call(links.link_exists, "userbr")
    assert ns.leftovers(state_root)["tables"] == []
    ns.call(links.delete_link, "userbr")
    ns.kill(c)


def test_two_bridges_share_the_table(ns: ScratchNetns, state_root: Path) -> None:
    a, b = ns.spawn_container(), ns.spawn_container()
    ra = ns.call(plan_and_setup, "on-a", Network(mode="bridge"), state_root, a.pid)
    rb = ns.call(plan_and_setup, "on-b", Network(mode="bridge", bridge="edbr1",
                                                  subnet="10.77.0.0/24"), state_root, b.pid)
    left = ns.leftovers(state_root)
    assert left["bridges"] == ["edbr1", "execdriver0"] and left["tables"] == ["inet execdriver"]
    # routed between the bridges through the host
    assert ns.exec_in(a.pid, ["busybox", "ping", "-c", "1", "-W", "2", "10.77.0.2"]).returncode == 0
    ns.call(network.teardown, ra)
    left = ns.leftovers(state_root)
    assert left["bridges"] == ["edbr1"] and left["tables"] == ["inet execdriver"]
    rules = [i["rule"]["comment"] for i in ns.ruleset() if "rule" in i]
    assert "execdriver bridge=execdriver0" not in rules and "execdriver bridge=edbr1" in rules
    ns.call(network.teardown, rb)
    ns.kill(a)
    ns.kill(b)
