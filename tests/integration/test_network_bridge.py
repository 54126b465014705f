"""Bridge networking on the real kernel, inside a network namespace each test creates.

The test's scratch netns plays the host: the bridge, veths and nftables rules are
made there; stand-in containers are ``unshare --net sleep`` processes started
from inside it. Traffic only goes between addresses inside these namespaces.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netns_helpers import plan_and_setup
from scratch_netns import ScratchNetns

from execdriver.kernel import network
from execdriver.kernel.network import links
from execdriver.spec import Network, PortMapping, Route

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("host_netns_untouched")]


# -- helpers (run in the scratch netns through ns.call) -----------------------------------

def ip_of(record: dict[str, Any], version: int = 4) -> str:
    for a in record["addresses"]:
        ip = a.split("/")[0]
        if (":" in ip) == (version == 6):
            return ip
    raise AssertionError(f"no IPv{version} address in {record['addresses']}")


class Containers:
    """Stand-in containers with networks; torn down in reverse at the end."""

    def __init__(self, ns: ScratchNetns, root: Path) -> None:
        self.ns, self.root = ns, root
        self.items: list[tuple[Any, dict[str, Any]]] = []

    def add(self, cid: str, net: Network) -> tuple[int, dict[str, Any]]:
        proc = self.ns.spawn_container()
        rec = self.ns.call(plan_and_setup, cid, net, self.root, proc.pid)
        self.items.append((proc, rec))
        return proc.pid, rec

    def teardown(self) -> None:
        for proc, rec in reversed(self.items):
            self.ns.call(network.teardown, rec)
            self.ns.kill(proc)
        self.items.clear()


@pytest.fixture
def cts(ns: ScratchNetns, state_root: Path) -> Any:
    c = Containers(ns, state_root)
    try:
        yield c
    finally:
        c.teardown()


def serve_http(ns: ScratchNetns, pid: int, www: Path, text: str, port: int = 80) -> None:
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(text)
    ns.spawn_in(pid, ["busybox", "httpd", "-f", "-p", str(port), "-h", str(www)])
    for _ in range(200):
        if ns.exec_in(pid, wget(f"http://127.0.0.1:{port}/")).returncode == 0:
            return
        time.sleep(0.02)
    raise AssertionError("httpd did not come up")


def wget(url: str) -> list[str]:
    # busybox 1.35's wget -T segfaults; coreutils timeout bounds blocked connections
    return ["timeout", "5", "busybox", "wget", "-qO-", url]


def ping(addr: str) -> list[str]:
    return ["busybox", "ping", "-c", "1", "-W", "2", addr]


def link_client(client_pid: int) -> None:
    """A veth between the scratch host (192.168.77.1/24) and a client netns (.2)."""
    from pyroute2 import IPRoute
    fd = os.open(f"/proc/{client_pid}/ns/net", os.O_RDONLY)
    with IPRoute() as ipr:
        ipr.link("add", ifname="edclient", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        idx = ipr.link_lookup(ifname="edclient")[0]
        ipr.addr("add", index=idx, address="192.168.77.1", prefixlen=24)
        ipr.link("set", index=idx, state="up")
    os.close(fd)

    def inside(ipr: Any) -> None:
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address="192.168.77.2", prefixlen=24)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway="192.168.77.1")
    links.in_netns(client_pid, inside)


def routes_in(pid: int) -> list[tuple[str, str | None]]:
    def body(ipr: Any) -> list[tuple[str, str | None]]:
        out = []
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = r.get("RTA_DST") or "0.0.0.0"
            out.append((f"{dst}/{r['dst_len']}", r.get("RTA_GATEWAY")))
        return sorted(out, key=str)
    return links.in_netns(pid, body)


def mtu_of(pid: int | None, ifname: str) -> int:
    def body(ipr: Any) -> int:
        return ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("mtu")
    if pid is None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            return body(ipr)
    return links.in_netns(pid, body)


# -- tests -----------------------------------------------------------------------------------

def test_two_containers_on_one_bridge_reach_each_other(ns: ScratchNetns, cts: Containers) -> None:
    a, ra = cts.add("alpha", Network(mode="bridge"))
    b, rb = cts.add("beta", Network(mode="bridge"))
    assert ra["addresses"] == ["10.88.0.2/16"] and rb["addresses"] == ["10.88.0.3/16"]
    assert ns.call(links.link_names, a) == ["eth0", "lo"]
    assert "10.88.0.2/16" in ns.call(links.addresses_of, a, "eth0")
    assert "10.88.0.1/16" in ns.call(links.addresses_of, None, "execdriver0")
    assert ns.call(routes_in, a) == [("0.0.0.0/0", "10.88.0.1"), ("10.88.0.0/16", None)]
    assert sorted(ns.call(links.link_names)) == sorted(
        ["lo", "execdriver0", ra["host_if"], rb["host_if"]])
    r = ns.exec_in(a, ping(ip_of(rb)))
    assert r.returncode == 0, r.stdout + r.stderr
    r = ns.exec_in(b, ping(ip_of(ra)))
    assert r.returncode == 0, r.stdout + r.stderr
    serve_http(ns, b, ns_tmp(ns) / "b", "from beta\n")
    assert ns.exec_in(a, wget(f"http://{ip_of(rb)}/")).stdout == "from beta\n"
    # both containers reach the host through the gateway
    assert ns.exec_in(a, ping("10.88.0.1")).returncode == 0
    assert Path("/proc/sys/net/ipv4/ip_forward").exists()
    assert ns.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"


def ns_tmp(ns: ScratchNetns) -> Path:
    d = Path("/tmp") / f"{ns.name}-www"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(autouse=True)
def _www_cleanup(ns: ScratchNetns) -> Any:
    yield
    import shutil
    shutil.rmtree(Path("/tmp") / f"{ns.name}-www", ignore_errors=True)


def test_published_port_from_host_other_namespace_and_containers(
        ns: ScratchNetns, cts: Containers) -> None:
    web, rweb = cts.add("web", Network(mode="bridge", ports=[
        PortMapping.parse("8080:80"), PortMapping.parse("192.168.77.1:8081:80")]))
    other, _ = cts.add("other", Network(mode="bridge"))
    serve_http(ns, web, ns_tmp(ns) / "web", "published\n")
    client = ns.spawn_container()
    ns.call(link_client, client.pid)
    try:
        # from another namespace, through the scratch host's address
        r = ns.exec_in(client.pid, wget("http://192.168.77.1:8080/"))
        assert (r.returncode, r.stdout) == (0, "published\n"), r.stderr
        assert ns.exec_in(client.pid, wget("http://192.168.77.1:8081/")).stdout == "published\n"
        # from the host itself: loopback, the gateway address, the uplink address
        for url in ("http://127.0.0.1:8080/", "http://10.88.0.1:8080/",
                    "http://192.168.77.1:8080/", "http://192.168.77.1:8081/"):
            r = ns.run(wget(url))
            assert (r.returncode, r.stdout) == (0, "published\n"), (url, r.stderr)
        # a host-ip mapping is bound to that address only
        assert ns.run(wget("http://10.88.0.1:8081/")).returncode != 0
        # from another container on the bridge, through the host (hairpin NAT)
        r = ns.exec_in(other, wget("http://10.88.0.1:8080/"))
        assert (r.returncode, r.stdout) == (0, "published\n"), r.stderr
        # and from the publishing container to itself
        assert ns.exec_in(web, wget("http://10.88.0.1:8080/")).stdout == "published\n"
    finally:
        ns.kill(client)
        from execdriver.kernel.network.links import delete_link
        ns.call(delete_link, "edclient")
    cts.teardown()
    # the rules went with the container: nothing answers on 8080 any more
    assert ns.run(wget("http://10.88.0.1:8080/")).returncode != 0
    assert rweb["ports"][0]["host_port"] == 8080


def test_guard_keeps_containers_off_host_loopback(ns: ScratchNetns, cts: Containers) -> None:
    """route_localnet (needed for 127.0.0.1:PORT from the host) must not let a container
    reach services bound to the host's loopback (the CVE-2020-8558 shape)."""
    evil, _ = cts.add("evil", Network(mode="bridge", ports=[PortMapping.parse("8080:80")]))
    www = ns_tmp(ns) / "lo"
    www.mkdir()
    (www / "index.html").write_text("host secret\n")
    ns.spawn(["busybox", "httpd", "-f", "-p", "127.0.0.1:9999", "-h", str(www)])
    for cmd in (["ip", "addr", "del", "127.0.0.1/8", "dev", "lo"],
                ["ip", "route", "add", "127.0.0.0/8", "via", "10.88.0.1", "dev", "eth0"],
                ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet"]):
        r = ns.exec_in(evil, cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    assert ns.run(wget("http://127.0.0.1:9999/")).stdout == "host secret\n"
    assert ns.exec_in(evil, wget("http://127.0.0.1:9999/")).returncode != 0
    # prove the guard is what stops it: without the rule the secret leaks
    guard = [item["rule"] for item in ns.ruleset()
             if "rule" in item and item["rule"]["chain"] == "guard"]
    assert len(guard) == 1
    from execdriver.kernel.network import nft
    ns.call(nft.run, [{"delete": {"rule": {k: guard[0][k] for k in
                                           ("family", "table", "chain", "handle")}}}])
    assert ns.exec_in(evil, wget("http://127.0.0.1:9999/")).stdout == "host secret\n"


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    data, peer = s.recvfrom(100)
    s.sendto(b"echo:" + data, peer)
"""

UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(20):
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recv(100).decode()); break
    except socket.timeout:
        pass
"""


def test_published_udp_port(ns: ScratchNetns, cts: Containers) -> None:
    dns, _ = cts.add("dns", Network(mode="bridge", ports=[PortMapping.parse("53:5353/udp")]))
    ns.spawn_in(dns, [sys.executable, "-c", UDP_ECHO])
    r = ns.run([sys.executable, "-c", UDP_CLIENT, "10.88.0.1", "53"])
    assert r.stdout.strip() == "echo:ping", r.stderr
    # tcp on the same number is not published
    assert ns.run(wget("http://10.88.0.1:53/")).returncode != 0


def test_isolation_blocks_container_traffic(ns: ScratchNetns, cts: Containers) -> None:
    iso, riso = cts.add("iso", Network(mode="bridge", isolate=True,
                                       ports=[PortMapping.parse("8080:80")]))
    open_, ropen = cts.add("open", Network(mode="bridge"))
    peer, rpeer = cts.add("peer", Network(mode="bridge"))
    serve_http(ns, iso, ns_tmp(ns) / "iso", "iso\n")
    serve_http(ns, peer, ns_tmp(ns) / "peer", "peer\n")
    # blocked both ways between the isolated container and the others
    assert ns.exec_in(open_, wget(f"http://{ip_of(riso)}/")).returncode != 0
    assert ns.exec_in(open_, ping(ip_of(riso))).returncode != 0
    assert ns.exec_in(iso, ping(ip_of(ropen))).returncode != 0
    assert ns.exec_in(iso, wget(f"http://{ip_of(rpeer)}/")).returncode != 0
    # not isolated ones still talk
    assert ns.exec_in(open_, wget(f"http://{ip_of(rpeer)}/")).stdout == "peer\n"
    # the host, and the published port, still work
    assert ns.exec_in(iso, ping("10.88.0.1")).returncode == 0
    assert ns.run(wget(f"http://{ip_of(riso)}/")).stdout == "iso\n"
    assert ns.run(wget("http://127.0.0.1:8080/")).stdout == "iso\n"
    tables = ns.run(["nft", "list", "table", "bridge", "execdriver"]).stdout
    assert riso["host_if"] in tables


def test_ipv6_subnet_and_published_port(ns: ScratchNetns, cts: Containers) -> None:
    net = Network(mode="bridge", subnet="fd00:88::/64",
                  ports=[PortMapping(host_ip="::", host_port=8080, container_port=80)])
    a, ra = cts.add("six-a", net)
    b, _ = cts.add("six-b", Network(mode="bridge", subnet="fd00:88::/64"))
    assert ra["addresses"] == ["fd00:88::2/64"] and ra["gateway"] == "fd00:88::1"
    r = ns.exec_in(b, ["busybox", "ping", "-6", "-c", "1", "-W", "3", "fd00:88::2"])
    assert r.returncode == 0, r.stdout + r.stderr
    serve_http(ns, a, ns_tmp(ns) / "six", "six\n")
    r = ns.run(wget("http://[fd00:88::1]:8080/"))
    assert (r.returncode, r.stdout) == (0, "six\n"), r.stderr
    assert ns.run(["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout.strip() == "1"


def test_static_address_extra_routes_and_mtu(ns: ScratchNetns, cts: Containers) -> None:
    net = Network(mode="bridge", addresses=["10.88.7.7/16", "fd00:5::7/64"], mtu=1400,
                  routes=[Route(destination="192.168.200.0/24", gateway="10.88.0.1"),
                          Route(destination="172.31.0.0/16")])
    a, ra = cts.add("static", net)
    b, _ = cts.add("dyn", Network(mode="bridge"))
    assert ra["addresses"] == ["10.88.7.7/16", "fd00:5::7/64"]
    assert sorted(ns.call(links.addresses_of, a, "eth0"))[:2] == ["10.88.7.7/16", "fd00:5::7/64"]
    assert ns.call(routes_in, a) == [("0.0.0.0/0", "10.88.0.1"), ("10.88.0.0/16", None),
                                     ("172.31.0.0/16", None), ("192.168.200.0/24", "10.88.0.1")]
    assert ns.call(mtu_of, a, "eth0") == 1400
    assert ns.call(mtu_of, None, ra["host_if"]) == 1400
    assert ns.exec_in(b, ping("10.88.7.7")).returncode == 0


def test_interface_stats_count_traffic(ns: ScratchNetns, cts: Containers) -> None:
    a, _ = cts.add("counted", Network(mode="bridge"))
    before = network.interface_stats(a)
    assert set(before) == {"lo", "eth0"}
    r = ns.exec_in(a, ["busybox", "ping", "-c", "5", "-i", "0.1", "-s", "1000", "10.88.0.1"])
    assert r.returncode == 0
    after = network.interface_stats(a)
    assert after["eth0"]["tx_packets"] - before["eth0"]["tx_packets"] >= 5
    assert after["eth0"]["rx_bytes"] - before["eth0"]["rx_bytes"] >= 5 * 1000
    assert after["eth0"]["tx_bytes"] - before["eth0"]["tx_bytes"] >= 5 * 1000


def test_etc_files_carry_the_lease(ns: ScratchNetns, cts: Containers, tmp_path: Path) -> None:
    _, rec = cts.add("named", Network(mode="bridge", dns=["10.88.0.1"]))
    files = network.write_etc_files(rec, tmp_path / "etc", "named-host", [])
    assert f"{ip_of(rec)}\tnamed-host\n" in Path(files["/etc/hosts"]).read_text()
    assert Path(files["/etc/resolv.conf"]).read_text() == "nameserver 10.88.0.1\n"
