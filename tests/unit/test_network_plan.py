"""Planning (names, leases, records) and the pure rule/file builders; no root needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from execdriver.errors import SpecError, StepFailed
from execdriver.kernel import network
from execdriver.kernel.network import firewall, ipam
from execdriver.kernel.network.files import default_hostname, resolv_conf_text, write_files
from execdriver.spec import Network, PortMapping, Route


def test_veth_name_fits_ifnamsiz_and_is_stable() -> None:
    names = {network.veth_name(f"container-{i}") for i in range(2000)}
    assert len(names) == 2000
    for name in names:
        assert len(name) <= 15 and name.startswith("vexd")
    assert network.veth_name("x" * 128) == network.veth_name("x" * 128)


def test_bridge_plan_leases_and_records(tmp_path: Path) -> None:
    net = Network(mode="bridge", ports=[PortMapping.parse("127.0.0.1:8080:80/udp")],
                  routes=[Route(destination="192.168.5.0/24", gateway="10.88.0.1")],
                  mtu=1400, isolate=True, dns=["10.0.0.53"])
    p = network.plan("c1", net, tmp_path)
    assert p.addresses == ["10.88.0.2/16"] and p.gateway == "10.88.0.1"
    assert p.gateways == ["10.88.0.1"] and p.host_if == network.veth_name("c1")
    assert p.ports == [{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80,
                        "protocol": "udp"}]
    rec = json.loads(json.dumps(p.record()))  # JSON-able
    assert rec["kind"] == "network" and rec["state_root"] == str(tmp_path)
    assert network.NetworkPlan.from_record(rec) == p
    assert p.gateway_cidr() == "10.88.0.1/16"
    # the lease is in the state root already
    assert "c1" in ipam.BridgeIPAM(tmp_path, "execdriver0").leases()


@pytest.mark.parametrize("mode,extra", [("none", {}), ("host", {}),
                                        ("container", {"container": "other"}),
                                        ("netns", {"netns_path": "/run/netns/x"})])
def test_other_modes_take_no_lease(tmp_path: Path, mode: str, extra: dict) -> None:
    p = network.plan("c1", Network(mode=mode, **extra), tmp_path)
    assert p.mode == mode and p.addresses == [] and p.host_if is None
    assert ipam.bridges_with_leases(tmp_path) == []
    assert p.container == extra.get("container") and p.netns_path == extra.get("netns_path")


def test_bad_network_fields_are_spec_errors(tmp_path: Path) -> None:
    net = Network(mode="bridge", addresses=["10.1.1.1", "nonsense"], subnet="10.88.0.0/33",
                  gateway="x", routes=[Route(destination="bad", gateway="also-bad")],
                  ports=[PortMapping(host_ip="localhost", host_port=1, container_port=1)],
                  dns=["dns.example"])
    with pytest.raises(SpecError) as err:
        network.plan("c1", net, tmp_path)
    problems = err.value.problems
    assert problems == [
        "network.addresses[0]: needs a prefix length, like 10.88.0.5/16",
        "network.addresses[1]: 'nonsense' is not an address/prefix",
        "network.subnet: '10.88.0.0/33' is not a subnet",
        "network.gateway: 'x' is not an address",
        "network.routes[0].destination: 'bad' is not a subnet",
        "network.routes[0].gateway: 'also-bad' is not an address",
        "network.ports[0].host_ip: 'localhost' is not an address",
        "network.dns[0]: 'dns.example' is not an address",
    ]
    assert ipam.bridges_with_leases(tmp_path) == []


@pytest.mark.parametrize("name", ["..", "a/b", "br 0", "br\n"])
def test_bridge_name_must_be_an_interface_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError, match=r"^network.bridge: "):
        network.plan("c1", Network(mode="none", bridge=name), tmp_path)


def test_port_clash_refused_before_lease(tmp_path: Path) -> None:
    network.plan("a", Network(mode="bridge", ports=[PortMapping.parse("8080:80")]), tmp_path)
    with pytest.raises(StepFailed) as err:
        network.plan("b", Network(mode="bridge", ports=[PortMapping.parse("10.0.0.1:8080:81")]),
                     tmp_path)
    assert str(err.value) == "network ports port=10.0.0.1:8080/tcp: already published by container a"
    assert "b" not in ipam.BridgeIPAM(tmp_path, "execdriver0").leases()
    # udp on the same number is another port
    network.plan("c", Network(mode="bridge", ports=[PortMapping.parse("8080:80/udp")]), tmp_path)
    # re-planning the owner is fine
    network.plan("a", Network(mode="bridge", ports=[PortMapping.parse("8080:80")]), tmp_path)


# -- firewall builders ---------------------------------------------------------------

def test_port_rules_dnat_per_family() -> None:
    ports = [{"host_ip": "0.0.0.0", "host_port": 8080, "container_port": 80, "protocol": "tcp"},
             {"host_ip": "192.168.1.5", "host_port": 53, "container_port": 5353,
              "protocol": "udp"},
             {"host_ip": "::", "host_port": 9000, "container_port": 90, "protocol": "tcp"}]
    rules = firewall.port_rules("c1", ["10.88.0.2/16", "fd00::2/64"], ports)
    assert all(r["chain"] == "ports" and r["comment"] == "execdriver id=c1" for r in rules)
    dnats = [next(e["dnat"] for e in r["expr"] if "dnat" in e) for r in rules]
    assert dnats == [{"family": "ip", "addr": "10.88.0.2", "port": 80},
                     {"family": "ip6", "addr": "fd00::2", "port": 80},
                     {"family": "ip", "addr": "10.88.0.2", "port": 5353},
                     {"family": "ip6", "addr": "fd00::2", "port": 90}]
    udp = rules[2]["expr"]
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                      "right": "192.168.1.5"}} in udp
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                      "right": 53}} in udp


def test_port_without_matching_family_makes_no_rule() -> None:
    ports = [{"host_ip": "::", "host_port": 1, "container_port": 1, "protocol": "tcp"}]
    assert firewall.port_rules("c1", ["10.88.0.2/16"], ports) == []


def test_bridge_rules_v4_and_v6() -> None:
    v4 = firewall.bridge_rules("br0", "10.88.0.0/16")
    assert [r["chain"] for r in v4] == ["postrouting", "postrouting", "postrouting", "guard"]
    assert all(r["comment"] == "execdriver bridge=br0" for r in v4)
    assert v4[0]["expr"][0]["match"]["right"] == {"prefix": {"addr": "10.88.0.0", "len": 16}}
    assert v4[-1]["expr"][-1] == {"drop": None}
    v6 = firewall.bridge_rules("br0", "fd00:88::/64")
    assert len(v6) == 2 and v6[0]["expr"][0]["match"]["left"]["payload"]["protocol"] == "ip6"


def test_isolation_rules_drop_both_directions() -> None:
    rules = firewall.isolation_rules("c1", "vexdabc")
    assert [r["family"] for r in rules] == ["bridge", "bridge"]
    keys = [r["expr"][0]["match"]["left"]["meta"]["key"] for r in rules]
    assert keys == ["iifname", "oifname"]


def test_skeleton_has_nat_hooks() -> None:
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in firewall.skeleton()
              if "chain" in c["add"]}
    assert chains["prerouting"]["hook"] == "prerouting" and chains["prerouting"]["type"] == "nat"
    assert chains["output"]["hook"] == "output"
    assert chains["postrouting"]["prio"] == 100
    assert "hook" not in chains["ports"]


# -- files -----------------------------------------------------------------------------

def test_etc_files_for_bridge(tmp_path: Path) -> None:
    p = network.NetworkPlan(container_id="abc", mode="bridge", state_root=str(tmp_path),
                            addresses=["10.88.0.2/16", "fd00::2/64"], dns=["10.0.0.53"])
    files = network.write_etc_files(p, tmp_path / "etc", "web", [])
    assert set(files) == {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
    hosts = Path(files["/etc/hosts"]).read_text()
    assert "127.0.0.1\tlocalhost\n" in hosts and "10.88.0.2\tweb\n" in hosts
    assert "fd00::2\tweb\n" in hosts
    assert Path(files["/etc/hostname"]).read_text() == "web\n"
    assert Path(files["/etc/resolv.conf"]).read_text() == "nameserver 10.0.0.53\n"
    assert oct(Path(files["/etc/hosts"]).stat().st_mode & 0o777) == "0o644"
    # explicit dns argument beats the plan's
    files = network.write_etc_files(p.record(), tmp_path / "etc", None, ["1.2.3.4"])
    assert Path(files["/etc/resolv.conf"]).read_text() == "nameserver 1.2.3.4\n"
    assert Path(files["/etc/hostname"]).read_text() == "abc\n"


def test_resolv_conf_drops_loopback_servers_unless_host_mode() -> None:
    host = ("# generated\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\n"
            "search example.com\noptions edns0\n")
    assert resolv_conf_text([], host, "bridge") == (
        "nameserver 10.1.1.1\nsearch example.com\noptions edns0\n")
    assert "nameserver 127.0.0.53" in resolv_conf_text([], host, "host")
    assert resolv_conf_text([], "nameserver 127.0.0.53\n", "none") == "# no nameservers\n"


def test_none_mode_hosts_and_host_mode_copy(tmp_path: Path) -> None:
    out = write_files(tmp_path / "n", "cid", "none", [], "box", [],
                      host_resolv_conf=str(tmp_path / "missing"))
    assert "127.0.1.1\tbox\n" in Path(out["/etc/hosts"]).read_text()
    host_hosts = tmp_path / "hosts"
    host_hosts.write_text("127.0.0.1 localhost\n10.0.0.9 db\n")
    out = write_files(tmp_path / "h", "cid", "host", [], "box", [], host_hosts=str(host_hosts))
    text = Path(out["/etc/hosts"]).read_text()
    assert "10.0.0.9 db" in text and "127.0.1.1\tbox" in text


def test_default_hostname() -> None:
    assert default_hostname("0123456789abcdef") == "0123456789ab"
    assert default_hostname("my_container.x") == "my-container"
    assert default_hostname("___") == "container"


# -- stats ------------------------------------------------------------------------------

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0: 1234567    890    1    2    0     0          0         3   765432     456    4    5    0     0       0          0
"""  # noqa: E501 - /proc/net/dev verbatim


def test_parse_net_dev() -> None:
    stats = network.parse_net_dev(NET_DEV)
    assert stats["eth0"] == {"rx_bytes": 1234567, "rx_packets": 890, "rx_errs": 1, "rx_drop": 2,
                             "tx_bytes": 765432, "tx_packets": 456, "tx_errs": 4, "tx_drop": 5}
    assert stats["lo"]["tx_packets"] == 2
    assert network.parse_net_dev("garbage\n") == {}


def test_interface_stats_of_self_and_missing_pid() -> None:
    assert "lo" in network.interface_stats(os.getpid())
    with pytest.raises(StepFailed, match=r"^network stats pid=999999999"):
        network.interface_stats(999999999)


def test_importing_network_does_not_import_pyroute2() -> None:
    code = ("import sys; import execdriver.kernel.network as n; "
            "n.plan; print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
