"""IPAM: leases in the state store, no root needed."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from execdriver.errors import StepFailed
from execdriver.kernel.network import ipam


def lease(root: Path, cid: str, subnet: str = "10.88.0.0/16", gateway: str | None = None,
          static: list[str] | None = None, ports: list[dict] | None = None,
          bridge: str = "execdriver0") -> dict:
    with ipam.network_lock(root):
        return ipam.BridgeIPAM(root, bridge).lease(cid, subnet, gateway, static or [], ports or [])


def release(root: Path, cid: str, bridge: str = "execdriver0") -> bool:
    with ipam.network_lock(root):
        return ipam.BridgeIPAM(root, bridge).release(cid)


def test_first_lease_skips_network_and_gateway(tmp_path: Path) -> None:
    got = lease(tmp_path, "a")
    assert got == {"subnet": "10.88.0.0/16", "gateway": "10.88.0.1", "addresses": ["10.88.0.2/16"]}
    assert lease(tmp_path, "b")["addresses"] == ["10.88.0.3/16"]


def test_same_container_gets_same_lease(tmp_path: Path) -> None:
    first = lease(tmp_path, "a")
    assert lease(tmp_path, "a") == first
    assert len(ipam.BridgeIPAM(tmp_path, "execdriver0").leases()) == 1


def test_file_lives_under_state_root_and_goes_with_last_lease(tmp_path: Path) -> None:
    lease(tmp_path, "a")
    path = tmp_path / ".ipam" / "execdriver0.json"
    data = json.loads(path.read_text())
    assert data["leases"]["a"]["addresses"] == ["10.88.0.2/16"]
    assert release(tmp_path, "a") is True
    assert not path.exists()
    assert release(tmp_path, "a") is False
    assert ipam.bridges_with_leases(tmp_path) == []


def test_released_address_not_reused_at_once(tmp_path: Path) -> None:
    lease(tmp_path, "a")
    lease(tmp_path, "b")
    release(tmp_path, "a")
    assert lease(tmp_path, "c")["addresses"] == ["10.88.0.4/16"]


def test_small_subnet_exhausts_and_wraps(tmp_path: Path) -> None:
    # /29: .0 network, .1 gateway, .7 broadcast -> .2 .. .6 usable
    got = [lease(tmp_path, f"c{i}", subnet="10.9.0.0/29")["addresses"][0] for i in range(5)]
    assert got == [f"10.9.0.{i}/29" for i in range(2, 7)]
    with pytest.raises(StepFailed, match="no free address"):
        lease(tmp_path, "full", subnet="10.9.0.0/29")
    release(tmp_path, "c1")
    assert lease(tmp_path, "again", subnet="10.9.0.0/29")["addresses"] == ["10.9.0.3/29"]


def test_static_address_in_subnet_is_reserved(tmp_path: Path) -> None:
    got = lease(tmp_path, "a", static=["10.88.0.2/16"])
    assert got["addresses"] == ["10.88.0.2/16"]
    assert lease(tmp_path, "b")["addresses"] == ["10.88.0.3/16"]
    with pytest.raises(StepFailed, match="address already in use"):
        lease(tmp_path, "c", static=["10.88.0.3/16"])
    with pytest.raises(StepFailed, match="address already in use"):
        lease(tmp_path, "d", static=["10.88.0.1/16"])  # the gateway


def test_static_address_outside_subnet_adds_a_lease(tmp_path: Path) -> None:
    got = lease(tmp_path, "a", static=["fd00:1::5/64"])
    assert got["addresses"] == ["10.88.0.2/16", "fd00:1::5/64"]


def test_ipv6_subnet(tmp_path: Path) -> None:
    got = lease(tmp_path, "a", subnet="fd00:88::/64")
    assert got["gateway"] == "fd00:88::1"
    assert got["addresses"] == ["fd00:88::2/64"]


def test_custom_gateway(tmp_path: Path) -> None:
    got = lease(tmp_path, "a", subnet="10.7.0.0/24", gateway="10.7.0.254")
    assert got["gateway"] == "10.7.0.254"
    assert got["addresses"] == ["10.7.0.1/24"]
    with pytest.raises(StepFailed, match="already uses gateway"):
        lease(tmp_path, "b", subnet="10.7.0.0/24")
    with pytest.raises(StepFailed, match="not a host address"):
        lease(tmp_path, "c", subnet="10.8.0.0/24", gateway="10.9.0.1", bridge="other")


def test_subnet_mismatch_on_one_bridge(tmp_path: Path) -> None:
    lease(tmp_path, "a")
    with pytest.raises(StepFailed) as err:
        lease(tmp_path, "b", subnet="10.99.0.0/16")
    assert "bridge=execdriver0" in str(err.value) and "10.88.0.0/16" in str(err.value)
    # another bridge may use it
    assert lease(tmp_path, "b", subnet="10.99.0.0/16", bridge="br1")["addresses"] == ["10.99.0.2/16"]


def test_bad_subnets(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="too small"):
        lease(tmp_path, "a", subnet="10.0.0.0/31")
    with pytest.raises(StepFailed, match="network ipam"):
        lease(tmp_path, "a", subnet="not-a-subnet")


def test_ports_clash() -> None:
    assert ipam.ports_clash(("0.0.0.0", 80, "tcp"), ("10.0.0.1", 80, "tcp"))
    assert ipam.ports_clash(("10.0.0.1", 80, "tcp"), ("10.0.0.1", 80, "tcp"))
    assert not ipam.ports_clash(("10.0.0.1", 80, "tcp"), ("10.0.0.2", 80, "tcp"))
    assert not ipam.ports_clash(("0.0.0.0", 80, "tcp"), ("0.0.0.0", 80, "udp"))
    assert not ipam.ports_clash(("0.0.0.0", 80, "tcp"), ("0.0.0.0", 81, "tcp"))


def test_published_ports_across_bridges(tmp_path: Path) -> None:
    lease(tmp_path, "a", ports=[{"host_ip": "0.0.0.0", "host_port": 8080, "container_port": 80,
                                 "protocol": "tcp"}])
    lease(tmp_path, "b", subnet="10.5.0.0/16", bridge="br1",
          ports=[{"host_ip": "127.0.0.1", "host_port": 53, "container_port": 53, "protocol": "udp"}])
    assert ipam.all_published_ports(tmp_path) == {("0.0.0.0", 8080, "tcp"): "a",
                                                  ("127.0.0.1", 53, "udp"): "b"}


def test_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    order: list[str] = []
    with ipam.network_lock(tmp_path):
        with ipam.network_lock(tmp_path):  # nested: no deadlock
            order.append("outer")
        t = threading.Thread(target=lambda: (ipam.network_lock(tmp_path).__enter__(),
                                             order.append("thread")))
        t.start()
        t.join(0.3)
        assert t.is_alive()  # blocked while we hold it
        order.append("release")
    t.join(5)
    assert order == ["outer", "release", "thread"]


def _lease_many(root: str, worker: int, n: int) -> None:
    for i in range(n):
        lease(Path(root), f"w{worker}-{i}")


def test_parallel_processes_get_distinct_addresses(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_lease_many, args=(str(tmp_path), w, 25)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    leases = ipam.BridgeIPAM(tmp_path, "execdriver0").leases()
    addrs = [a for lease_ in leases.values() for a in lease_["addresses"]]
    assert len(leases) == 150
    assert len(set(addrs)) == 150
