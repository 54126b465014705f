"""Links, addresses and routes over rtnetlink (pyroute2; never the ``ip`` command).

Host-side calls act on the caller's network namespace. Calls that configure a
container run in a short-lived thread that has ``setns``-ed into the netns of
the container's pid: a netns switch is per thread, so the caller's own
namespace never changes, and the netlink socket opened in that thread stays
bound to the container's namespace.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import StepFailed
from .. import syscalls

BRIDGE_ALIAS = "execdriver bridge"
IFA_F_NODAD = 0x02
T = TypeVar("T")


def veth_alias(container_id: str) -> str:
    return f"execdriver id={container_id}"


def netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def fail(step: str, exc: BaseException, **context: Any) -> StepFailed:
    """A pyroute2/OS error as StepFailed, keeping the errno."""
    if isinstance(exc, StepFailed):
        return exc
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return StepFailed(step, os.strerror(code), errno=code, **context)
    return StepFailed(step, str(exc) or type(exc).__name__, **context)


def _iproute() -> Any:
    from pyroute2 import IPRoute  # heavy: import only when networking is used
    return IPRoute()


def _netlink_code(exc: BaseException) -> int | None:
    return getattr(exc, "code", None)


def _errors() -> tuple[type[BaseException], ...]:
    """What a pyroute2 request raises: NetlinkError (with .code = errno) or OSError."""
    from pyroute2.netlink.exceptions import NetlinkError
    return (NetlinkError, OSError)


# -- running in a container's netns ------------------------------------------------

def in_netns(pid: int, fn: Callable[[Any], T]) -> T:
    """Call ``fn(iproute)`` with an IPRoute bound to the netns of ``pid``."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(netns_path(pid), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            result["error"] = fail("network netns", exc, pid=pid)
            return
        try:
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
        except OSError as exc:
            result["error"] = fail("network netns", exc, pid=pid)
            return
        finally:
            os.close(fd)
        try:
            with _iproute() as ipr:
                result["value"] = fn(ipr)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    t = threading.Thread(target=body, name=f"netns-{pid}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def link_names(pid: int | None = None) -> list[str]:
    """Interface names in the netns of ``pid`` (the caller's own when None)."""
    def names(ipr: Any) -> list[str]:
        return sorted(link.get("ifname") for link in ipr.get_links())
    if pid is None:
        with _iproute() as ipr:
            return names(ipr)
    return in_netns(pid, names)


# -- host side -----------------------------------------------------------------------

def _link(ipr: Any, name: str) -> Any | None:
    found = ipr.link_lookup(ifname=name)
    return ipr.get_links(found[0])[0] if found else None


def _kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def link_exists(name: str) -> bool:
    with _iproute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def bridge_is_ours(name: str) -> bool:
    with _iproute() as ipr:
        link = _link(ipr, name)
        return link is not None and link.get("ifalias") == BRIDGE_ALIAS


def ensure_bridge(name: str, gateways: list[str], mtu: int | None = None) -> bool:
    """Create the bridge if missing, give it the gateway addresses, bring it up.

    ``gateways`` are CIDRs (``10.88.0.1/16``). Returns True if it was created. A
    bridge someone else made (no alias of ours) is used as it is.
    """
    with _iproute() as ipr:
        try:
            link: Any = _link(ipr, name)
            created = link is None
            if created:
                ipr.link("add", ifname=name, kind="bridge")
                link = _link(ipr, name)
                ipr.link("set", index=link["index"], ifalias=BRIDGE_ALIAS)
            elif _kind(link) != "bridge":
                raise StepFailed("network bridge", "exists and is not a bridge", bridge=name)
            elif link.get("ifalias") != BRIDGE_ALIAS:
                return False
        except StepFailed:
            raise
        except _errors() as exc:
            raise fail("network bridge", exc, bridge=name) from None
        idx = link["index"]
        for cidr in gateways:
            iface = ipaddress.ip_interface(cidr)
            try:
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                         **({"flags": IFA_F_NODAD} if iface.version == 6 else {}))
            except _errors() as exc:
                if _netlink_code(exc) != 17:  # EEXIST: a sibling container added it
                    raise fail("network bridge address", exc, bridge=name, address=cidr) from None
        try:
            if mtu and created:
                ipr.link("set", index=idx, mtu=mtu)
            ipr.link("set", index=idx, state="up")
        except _errors() as exc:
            raise fail("network bridge up", exc, bridge=name) from None
        return created


def delete_link(name: str) -> bool:
    """Delete a link if present (a veth takes its peer with it). True if deleted."""
    with _iproute() as ipr:
        try:
            ipr.link("del", ifname=name)
            return True
        except _errors() as exc:
            if _netlink_code(exc) == 19:  # ENODEV
                return False
            raise fail("network link delete", exc, interface=name) from None


def create_veth(host_if: str, peer: str, pid: int, bridge: str, container_id: str,
                mtu: int | None, hairpin: bool = False) -> None:
    """A veth pair whose peer is born inside the netns of ``pid`` as ``peer``.

    Creating the peer in the target namespace (IFLA_NET_NS_FD) means no moment
    exists where both ends sit in the host namespace under temporary names.
    ``hairpin`` lets the bridge send a frame back out the port it came from: a
    container reaching its own published port is DNATed back to itself.
    """
    try:
        nsfd = os.open(netns_path(pid), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise fail("network veth", exc, interface=host_if, pid=pid) from None
    with _iproute() as ipr:
        try:
            if ipr.link_lookup(ifname=host_if):  # left over from a crashed attempt
                ipr.link("del", ifname=host_if)
            peer_spec: dict[str, Any] = {"ifname": peer, "net_ns_fd": nsfd}
            extra: dict[str, Any] = {}
            if mtu:
                peer_spec["mtu"] = mtu
                extra["mtu"] = mtu
            ipr.link("add", ifname=host_if, kind="veth", peer=peer_spec, **extra)
        except _errors() as exc:
            raise fail("network veth", exc, interface=host_if, peer=peer) from None
        finally:
            os.close(nsfd)
        try:
            idx = ipr.link_lookup(ifname=host_if)[0]
            master = ipr.link_lookup(ifname=bridge)
            if not master:
                raise StepFailed("network veth attach", "bridge is gone", bridge=bridge,
                                 interface=host_if)
            ipr.link("set", index=idx, ifalias=veth_alias(container_id))
            ipr.link("set", index=idx, master=master[0])
            if hairpin:
                ipr.brport("set", index=idx, mode=1)  # IFLA_BRPORT_MODE = BRIDGE_MODE_HAIRPIN
            ipr.link("set", index=idx, state="up")
        except StepFailed:
            raise
        except _errors() as exc:
            raise fail("network veth attach", exc, interface=host_if, bridge=bridge) from None


def delete_bridge(name: str) -> bool:
    return delete_link(name)


# -- container side ------------------------------------------------------------------

def _route_dst(destination: str) -> tuple[str, int]:  # (dst, ip version)
    if destination in ("default", "0.0.0.0/0"):
        return "0.0.0.0/0", 4
    if destination == "::/0":
        return "::/0", 6
    net = ipaddress.ip_network(destination, strict=False)
    return str(net), int(net.version)


def configure_container(pid: int, ifname: str, addresses: list[str], gateways: list[str],
                        routes: list[dict[str, Any]], mtu: int | None) -> None:
    """Inside the netns of ``pid``: lo up; ``ifname`` gets MTU, addresses, up, routes."""
    def body(ipr: Any) -> None:
        _loopback_up(ipr)
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise StepFailed("network address", "interface missing in container",
                             interface=ifname, pid=pid)
        idx = found[0]
        if mtu:
            try:
                ipr.link("set", index=idx, mtu=mtu)
            except _errors() as exc:
                raise fail("network mtu", exc, interface=ifname, mtu=mtu) from None
        for cidr in addresses:
            iface = ipaddress.ip_interface(cidr)
            try:
                # NODAD: the address is ours by lease; waiting out DAD only delays start.
                ipr.addr("add", index=idx, address=str(iface.ip),
                         prefixlen=iface.network.prefixlen,
                         **({"flags": IFA_F_NODAD} if iface.version == 6 else {}))
            except _errors() as exc:
                if _netlink_code(exc) != 17:
                    raise fail("network address", exc, interface=ifname, address=cidr) from None
        try:
            ipr.link("set", index=idx, state="up")
        except _errors() as exc:
            raise fail("network up", exc, interface=ifname) from None
        for gw in gateways:
            v = ipaddress.ip_address(gw).version
            _add_route(ipr, idx, "0.0.0.0/0" if v == 4 else "::/0", v, gw, ifname)
        for route in routes:
            dst, version = _route_dst(route["destination"])
            _add_route(ipr, idx, dst, version, route.get("gateway"), ifname)
    in_netns(pid, body)


def _add_route(ipr: Any, idx: int, dst: str, version: int, gateway: str | None,
               ifname: str) -> None:
    import socket
    kw: dict[str, Any] = {"dst": dst, "oif": idx,
                          "family": socket.AF_INET if version == 4 else socket.AF_INET6}
    if gateway:
        kw["gateway"] = gateway
    try:
        ipr.route("add", **kw)
    except _errors() as exc:
        if _netlink_code(exc) != 17:
            raise fail("network route", exc, interface=ifname, destination=dst,
                       gateway=gateway or "-") from None


def _loopback_up(ipr: Any) -> None:
    try:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    except _errors() as exc:
        raise fail("network loopback", exc, interface="lo") from None


def loopback_up(pid: int) -> None:
    in_netns(pid, _loopback_up)


def addresses_of(pid: int | None, ifname: str) -> list[str]:
    """CIDRs on ``ifname`` (in the netns of ``pid``, or the caller's)."""
    def body(ipr: Any) -> list[str]:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return []
        return sorted(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                      for a in ipr.get_addr(index=found[0]))
    if pid is None:
        with _iproute() as ipr:
            return body(ipr)
    return in_netns(pid, body)

