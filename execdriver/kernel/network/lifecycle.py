"""setup and teardown of a container's network, host side and inside.

Order in ``setup`` (bridge mode), under the state root's network lock:
mark the bridge ours in the IPAM file if we are about to create it, bridge,
sysctls, bridge NAT rules, veth (peer born in the container netns as eth0),
addresses and routes inside, container rules. On failure the veth and the
container's rules are removed again; the lease stays for ``teardown``.

``teardown`` works from the record alone and never fails half-way: each step
runs, the first error is raised at the end. When the bridge's last lease goes,
its NAT rules go, the bridge goes (if we created it) and our tables go once
empty.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path
from typing import Any

from ...errors import StepFailed
from . import firewall, ipam, links
from .nft import NftError
from .planner import VETH_PREFIX, NetworkPlan, veth_name

OWN_BRIDGE_KEY = "own_bridge"


def _as_plan(plan: NetworkPlan | dict[str, Any]) -> NetworkPlan:
    return plan if isinstance(plan, NetworkPlan) else NetworkPlan.from_record(plan)


def _sysctl(path: str, value: str, **context: Any) -> None:
    try:
        with open(path, "r+") as f:
            if f.read().strip() != value:
                f.seek(0)
                f.write(value)
    except OSError as exc:
        raise links.fail("network sysctl", exc, path=path, **context) from None


def _firewall(step: str, fn: Any, *args: Any, **context: Any) -> Any:
    try:
        return fn(*args)
    except NftError as exc:
        raise StepFailed(step, str(exc), **context) from None


def setup(plan: NetworkPlan | dict[str, Any], netns_pid: int) -> None:
    """Create the container's network in the netns of ``netns_pid``."""
    p = _as_plan(plan)
    if p.mode in ("host", "container", "netns"):
        return  # the driver joins (or keeps) an existing namespace; nothing to build
    if p.mode not in ("none", "bridge"):
        raise StepFailed("network setup", f"unknown mode {p.mode}", container_id=p.container_id)
    _check_own_netns(netns_pid, p.container_id)
    if p.mode == "none":
        links.loopback_up(netns_pid)
        return
    assert p.bridge and p.host_if and p.subnet and p.gateway
    with ipam.network_lock(p.state_root):
        try:
            _setup_bridge(p, netns_pid)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                _undo_container(p)
            if isinstance(exc, StepFailed):
                exc.container_id = exc.container_id or p.container_id
            raise


def _check_own_netns(pid: int, container_id: str) -> None:
    """Refuse a pid in our own netns: eth0, routes and lo would land on the host."""
    try:
        theirs = os.stat(links.netns_path(pid)).st_ino
        ours = os.stat("/proc/thread-self/ns/net").st_ino  # netns is per thread
    except OSError as exc:
        raise links.fail("network netns", exc, pid=pid) from None
    if theirs == ours:
        raise StepFailed("network netns", "the container shares the runtime's network namespace",
                         container_id=container_id, pid=pid)


def _setup_bridge(p: NetworkPlan, pid: int) -> None:
    assert p.bridge and p.host_if and p.subnet
    if not links.link_exists(p.bridge):
        # record before create: teardown of the last lease may remove it
        store = ipam.BridgeIPAM(p.state_root, p.bridge)
        data = store.load()
        if data["leases"] and not data.get(OWN_BRIDGE_KEY):
            data[OWN_BRIDGE_KEY] = True
            store.save(data)
    links.ensure_bridge(p.bridge, [p.gateway_cidr()])
    version = ipaddress.ip_network(p.subnet).version
    if version == 4:
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        _sysctl(f"/proc/sys/net/ipv4/conf/{p.bridge}/route_localnet", "1", bridge=p.bridge)
    else:
        _sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")
    _firewall("network firewall", firewall.install_bridge, p.bridge, p.subnet, bridge=p.bridge)
    links.create_veth(p.host_if, p.peer_if, pid, p.bridge, p.container_id, p.mtu,
                      hairpin=bool(p.ports))
    links.configure_container(pid, p.peer_if, p.addresses, p.gateways, p.routes, p.mtu)
    _firewall("network firewall", firewall.install_container, p.container_id, p.host_if,
              p.addresses, p.ports, p.isolate, interface=p.host_if)


def _undo_container(p: NetworkPlan) -> None:
    if p.host_if:
        links.delete_link(p.host_if)
    firewall.remove_container(p.container_id)


def teardown(record: NetworkPlan | dict[str, Any]) -> None:
    """Remove veth, rules and lease; then the bridge and tables nobody uses. Idempotent.
    A slirp4netns record: end that process."""
    if isinstance(record, dict) and record.get("mode") == "slirp4netns":
        from . import slirp
        slirp.stop(record)
        return
    p = _as_plan(record)
    if p.mode != "bridge" or not p.bridge:
        return
    errors: list[StepFailed] = []

    def attempt(step: str, fn: Any, *args: Any, **context: Any) -> Any:
        try:
            return fn(*args)
        except StepFailed as exc:
            errors.append(exc)
        except NftError as exc:
            errors.append(StepFailed(step, str(exc), **context))
        except Exception as exc:  # noqa: BLE001 - keep going, report at the end
            errors.append(links.fail(step, exc, **context))
        return None

    with ipam.network_lock(p.state_root):
        host_if = p.host_if or veth_name(p.container_id)
        attempt("network veth delete", links.delete_link, host_if, interface=host_if)
        attempt("network firewall", firewall.remove_container, p.container_id)
        store = ipam.BridgeIPAM(p.state_root, p.bridge)
        data = attempt("network ipam", store.load, bridge=p.bridge) or {"leases": {}}
        attempt("network ipam", store.release, p.container_id, bridge=p.bridge)
        remaining = {k for k in data["leases"] if k != p.container_id}
        if not remaining:
            attempt("network firewall", firewall.remove_bridge, p.bridge, bridge=p.bridge)
            owned = data.get(OWN_BRIDGE_KEY) or attempt(
                "network bridge", links.bridge_is_ours, p.bridge, bridge=p.bridge)
            if owned:
                attempt("network bridge delete", links.delete_bridge, p.bridge, bridge=p.bridge)
        attempt("network firewall", firewall.drop_unused_tables)
    if errors:
        err = errors[0]
        err.container_id = err.container_id or p.container_id
        raise err


def reclaim_orphans(state_root: str | os.PathLike[str]) -> list[str]:
    """Tear down leases whose container has no state directory (a create killed
    between leasing and recording). Returns the container ids reclaimed."""
    root = Path(state_root)
    done = []
    with ipam.network_lock(root):
        for bridge in ipam.bridges_with_leases(root):
            for cid in ipam.BridgeIPAM(root, bridge).leases():
                if not (root / cid).is_dir():
                    teardown(NetworkPlan(container_id=cid, mode="bridge", state_root=str(root),
                                         bridge=bridge, host_if=veth_name(cid)))
                    done.append(cid)
    return done


def leftovers(state_root: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """What of ours exists in the caller's netns (and the state root's IPAM):
    veths, bridges we made, nftables tables, leases. Empty lists mean clean."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        all_links = [(lk.get("ifname"), lk.get("ifalias")) for lk in ipr.get_links()]
    out = {
        "veths": sorted(n for n, _ in all_links if n.startswith(VETH_PREFIX)),
        "bridges": sorted(n for n, a in all_links if a == links.BRIDGE_ALIAS),
        "tables": firewall.our_tables(),
        "leases": [],
    }
    if state_root is not None:
        for bridge in ipam.bridges_with_leases(state_root):
            out["leases"] += [f"{bridge}:{cid}"
                              for cid in ipam.BridgeIPAM(state_root, bridge).leases()]
    return out
