"""From a spec's Network to a NetworkPlan: names and addresses, decided up front.

The plan is everything teardown needs, so the caller stores ``plan.record()``
in the container state *before* ``setup`` creates anything. Planning a bridge
container takes its IPAM lease (and checks its published ports against every
other lease in the state root); nothing in the kernel is touched yet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import SpecError, StepFailed
from . import ipam

if TYPE_CHECKING:
    from ...config import Network

VETH_PREFIX = "vexd"
RECORD_KIND = "network"
RECORD_VERSION = 1
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # also a safe file name for the IPAM


def veth_name(container_id: str) -> str:
    """Host end of the container's veth: ``vexd`` + 11 hex digits (15 = IFNAMSIZ-1)."""
    return VETH_PREFIX + hashlib.sha256(container_id.encode()).hexdigest()[:11]


@dataclass
class NetworkPlan:
    container_id: str
    mode: str
    state_root: str
    bridge: str | None = None
    subnet: str | None = None
    gateway: str | None = None           # the bridge's address in the subnet
    host_if: str | None = None
    peer_if: str = "eth0"
    addresses: list[str] = field(default_factory=list)   # CIDRs for eth0
    gateways: list[str] = field(default_factory=list)    # default routes via these
    mtu: int | None = None
    routes: list[dict[str, Any]] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    isolate: bool = False
    dns: list[str] = field(default_factory=list)
    container: str | None = None         # mode container: whose netns
    netns_path: str | None = None        # mode netns: which namespace file
    version: int = RECORD_VERSION

    def record(self) -> dict[str, Any]:
        """JSON-able; enough for :func:`teardown` after a crash at any point."""
        return {"kind": RECORD_KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> NetworkPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def gateway_cidr(self) -> str:
        assert self.gateway and self.subnet
        return f"{self.gateway}/{ipaddress.ip_network(self.subnet).prefixlen}"


def _check(net: Network) -> list[str]:
    """Problems the spec model does not catch, as ``network.<field>: reason``."""
    problems = []
    if not IFNAME_RE.fullmatch(net.bridge) or net.bridge in (".", ".."):
        problems.append(f"network.bridge: {net.bridge!r} is not an interface name "
                        "(letters, digits, '_', '.', '-')")
    for i, a in enumerate(net.addresses):
        try:
            ipaddress.ip_interface(a)
            if "/" not in a:
                problems.append(f"network.addresses[{i}]: needs a prefix length, like 10.88.0.5/16")
        except ValueError:
            problems.append(f"network.addresses[{i}]: {a!r} is not an address/prefix")
    try:
        ipaddress.ip_network(net.subnet, strict=False)
    except ValueError:
        problems.append(f"network.subnet: {net.subnet!r} is not a subnet")
    if net.gateway is not None:
        try:
            ipaddress.ip_address(net.gateway)
        except ValueError:
            problems.append(f"network.gateway: {net.gateway!r} is not an address")
    for i, r in enumerate(net.routes):
        if r.destination not in ("default",):
            try:
                ipaddress.ip_network(r.destination, strict=False)
            except ValueError:
                problems.append(f"network.routes[{i}].destination: {r.destination!r} is not a subnet")
        if r.gateway is not None:
            try:
                ipaddress.ip_address(r.gateway)
            except ValueError:
                problems.append(f"network.routes[{i}].gateway: {r.gateway!r} is not an address")
    for i, p in enumerate(net.ports):
        try:
            ipaddress.ip_address(p.host_ip)
        except ValueError:
            problems.append(f"network.ports[{i}].host_ip: {p.host_ip!r} is not an address")
    for i, d in enumerate(net.dns):
        try:
            ipaddress.ip_address(d)
        except ValueError:
            problems.append(f"network.dns[{i}]: {d!r} is not an address")
    return problems


def plan(container_id: str, net: Network, state_root: Path) -> NetworkPlan:
    """Decide names and addresses; for bridge mode, take the IPAM lease."""
    problems = _check(net)
    if problems:
        raise SpecError(problems)
    p = NetworkPlan(container_id=container_id, mode=net.mode, state_root=str(state_root),
                    dns=list(net.dns), mtu=net.mtu,
                    routes=[{"destination": r.destination, "gateway": r.gateway} for r in net.routes],
                    container=net.container, netns_path=net.netns_path)
    if net.mode != "bridge":
        return p
    p.bridge = net.bridge
    p.host_if = veth_name(container_id)
    p.isolate = net.isolate
    p.ports = [{"host_ip": x.host_ip, "host_port": x.host_port, "container_port": x.container_port,
                "protocol": x.protocol} for x in net.ports]
    with ipam.network_lock(state_root):
        taken = ipam.all_published_ports(state_root)
        for port in p.ports:
            key = ipam.port_key(port)
            for other_key, owner in taken.items():
                if owner != container_id and ipam.ports_clash(key, other_key):
                    raise StepFailed("network ports", f"already published by container {owner}",
                                     port=f"{key[0]}:{key[1]}/{key[2]}")
        lease = ipam.BridgeIPAM(state_root, net.bridge).lease(
            container_id, net.subnet, net.gateway, list(net.addresses), p.ports)
    p.subnet, p.gateway, p.addresses = lease["subnet"], lease["gateway"], lease["addresses"]
    p.gateways = [p.gateway]
    return p
