"""Address management: leases in the state store, one JSON file per bridge.

``<state_root>/.ipam/<bridge>.json`` holds the bridge's subnet, gateway and the
leases keyed by container id (each lease: addresses and published ports). The
file goes away with its last lease, so an idle state root holds no IPAM data.
Every read-modify-write happens under :func:`network_lock`, one ``flock`` per
state root that also serialises the host-side network setup and teardown
(bridge creation versus removal of the last user, firewall rule batches).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import StepFailed
from ..fileio import write_atomic

IPAM_DIR = ".ipam"
LOCK_FILE = ".lock"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_held = threading.local()


def ipam_dir(state_root: str | os.PathLike[str]) -> Path:
    return Path(state_root) / IPAM_DIR


@contextlib.contextmanager
def network_lock(state_root: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive lock over the state root's networking; re-entrant within a thread."""
    d = ipam_dir(state_root)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = str(d.resolve())
    depth: dict[str, int] = getattr(_held, "depth", None) or {}
    _held.depth = depth
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
    finally:
        os.close(fd)


def parse_subnet(subnet: str) -> IPNetwork:
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError as exc:
        raise StepFailed("network ipam", str(exc), subnet=subnet) from None
    if net.num_addresses < 4:
        raise StepFailed("network ipam", "subnet too small (need at least a /30 or /126)",
                         subnet=subnet)
    return net


def default_gateway(net: IPNetwork) -> IPAddress:
    return net.network_address + 1


def port_key(port: dict[str, Any]) -> tuple[str, int, str]:
    return (port.get("host_ip", "0.0.0.0"), int(port["host_port"]), port.get("protocol", "tcp"))


def ports_clash(a: tuple[str, int, str], b: tuple[str, int, str]) -> bool:
    """Same port and protocol, and the host addresses overlap (a wildcard overlaps all)."""
    if a[1:] != b[1:]:
        return False
    wild = ("0.0.0.0", "::")
    return a[0] == b[0] or a[0] in wild or b[0] in wild


class BridgeIPAM:
    """The leases of one bridge. Call every method with :func:`network_lock` held."""

    def __init__(self, state_root: str | os.PathLike[str], bridge: str) -> None:
        self.state_root = Path(state_root)
        self.bridge = bridge
        self.path = ipam_dir(state_root) / f"{bridge}.json"

    # -- file ----------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"bridge": self.bridge, "leases": {}}
        except ValueError as exc:
            raise StepFailed("network ipam", f"unreadable lease file: {exc}",
                             path=self.path) from None
        data.setdefault("leases", {})
        return data

    def save(self, data: dict[str, Any]) -> None:
        if not data["leases"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, json.dumps(data, sort_keys=True, indent=1), fsync=True)

    # -- queries -------------------------------------------------------------
    def leases(self) -> dict[str, dict[str, Any]]:
        return dict(self.load()["leases"])

    # -- changes -------------------------------------------------------------
    def lease(self, container_id: str, subnet: str, gateway: str | None,
              static: list[str], ports: list[dict[str, Any]]) -> dict[str, Any]:
        """Lease addresses for a container; returns ``{"subnet", "gateway", "addresses"}``.

        ``static`` addresses inside the subnet are reserved; when none of them is in
        the subnet one address is picked. A container that already holds a lease
        gets the same one back (a retried create after a crash).
        """
        net = parse_subnet(subnet)
        gw = self._gateway(net, gateway)
        data = self.load()
        leases: dict[str, dict[str, Any]] = data["leases"]
        if leases and data.get("subnet") and data["subnet"] != str(net):
            raise StepFailed("network ipam", f"bridge already uses subnet {data['subnet']}",
                             bridge=self.bridge, subnet=str(net))
        if leases and data.get("gateway") and data["gateway"] != str(gw):
            raise StepFailed("network ipam", f"bridge already uses gateway {data['gateway']}",
                             bridge=self.bridge, gateway=str(gw))
        if container_id in leases:
            return {"subnet": str(net), "gateway": str(gw),
                    "addresses": list(leases[container_id]["addresses"])}
        used = {ipaddress.ip_interface(a).ip for lease in leases.values()
                for a in lease["addresses"]}
        addresses: list[str] = []
        in_subnet = False
        for text in static:
            iface = ipaddress.ip_interface(text)
            if iface.ip in net:
                in_subnet = True
                if iface.ip in used or iface.ip == gw or iface.ip in (
                        net.network_address, net.broadcast_address):
                    raise StepFailed("network ipam", "address already in use",
                                     bridge=self.bridge, address=str(iface.ip))
                used.add(iface.ip)
            addresses.append(str(iface))
        if not in_subnet:
            ip = self._pick(net, gw, used, data.get("last"))
            data["last"] = str(ip)
            addresses.insert(0, f"{ip}/{net.prefixlen}")
        data.update(subnet=str(net), gateway=str(gw), bridge=self.bridge)
        leases[container_id] = {"addresses": addresses, "ports": ports}
        self.save(data)
        return {"subnet": str(net), "gateway": str(gw), "addresses": addresses}

    def release(self, container_id: str) -> bool:
        data = self.load()
        if container_id not in data["leases"]:
            return False
        del data["leases"][container_id]
        self.save(data)
        return True

    # -- helpers -------------------------------------------------------------
    def _gateway(self, net: IPNetwork, gateway: str | None) -> IPAddress:
        if gateway is None:
            return default_gateway(net)
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError as exc:
            raise StepFailed("network ipam", str(exc), gateway=gateway) from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise StepFailed("network ipam", "gateway is not a host address of the subnet",
                             gateway=gateway, subnet=str(net))
        return gw

    @staticmethod
    def _pick(net: IPNetwork, gw: IPAddress, used: set[Any], last: str | None) -> IPAddress:
        """Next free host address after the last one handed out (so ids are not reused at once)."""
        first = int(net.network_address) + 1
        # IPv4 loses its broadcast address; IPv6 has none (the all-ones one is fine but rare).
        end = int(net.broadcast_address) - (1 if net.version == 4 else 0)
        size = end - first + 1
        start = first
        if last:
            with contextlib.suppress(ValueError):
                prev = int(ipaddress.ip_address(last))
                if first <= prev <= end:
                    start = prev + 1
        limit = min(size, len(used) + 2)  # at most this many candidates can be taken
        for i in range(limit):
            cand = ipaddress.ip_address(first + (start - first + i) % size)
            if cand != gw and cand not in used:
                return cand
        raise StepFailed("network ipam", "no free address in subnet", subnet=str(net))


def bridges_with_leases(state_root: str | os.PathLike[str]) -> list[str]:
    d = ipam_dir(state_root)
    try:
        return sorted(p.stem for p in d.glob("*.json"))
    except OSError:
        return []


def all_published_ports(state_root: str | os.PathLike[str]) -> dict[tuple[str, int, str], str]:
    """Every published port of every lease, mapped to its container id."""
    out: dict[tuple[str, int, str], str] = {}
    for bridge in bridges_with_leases(state_root):
        for cid, lease in BridgeIPAM(state_root, bridge).leases().items():
            for port in lease.get("ports", []):
                out[port_key(port)] = cid
    return out
