"""Our nftables rules: NAT for bridge subnets, published ports, isolation.

Everything lives in two tables of our own, so we never edit anyone else's:

``table inet execdriver``
    ``prerouting``/``output`` (nat) jump to ``ports`` for packets to a local
    address, so a published port works from other namespaces and from the host
    itself; ``ports`` holds one DNAT rule per published port; ``postrouting``
    (nat) masquerades a bridge subnet's outbound traffic, DNATed traffic that
    loops back onto the bridge (container to a published port) and host
    loopback sources (``curl 127.0.0.1:PORT``, which needs route_localnet on
    the bridge); ``guard`` (filter, raw priority) drops packets that arrive on
    a bridge for 127.0.0.0/8, the hole route_localnet would otherwise open.
``table bridge execdriver``
    ``isolate`` (filter, forward): drops frames bridged to or from an isolated
    container's veth. Traffic to the host and published ports still flows.

Rules carry a comment naming their owner — ``execdriver id=<container>`` or
``execdriver bridge=<name>`` — and teardown deletes by owner, so it needs
nothing but the container id. The builders are pure; the ``install_*`` /
``remove_*`` functions talk to the kernel and must run under the network lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from . import nft

TABLE = "execdriver"
BASE_COMMENT = "execdriver base"

Rule = dict[str, Any]


def container_comment(container_id: str) -> str:
    return f"execdriver id={container_id}"


def bridge_comment(bridge: str) -> str:
    return f"execdriver bridge={bridge}"


# -- expression helpers --------------------------------------------------------

def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _prefix(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _fib_daddr_local() -> dict[str, Any]:
    return _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")


def _ipproto(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _rule(family: str, chain: str, comment: str, expr: list[dict[str, Any]]) -> Rule:
    return {"family": family, "table": TABLE, "chain": chain, "comment": comment, "expr": expr}


# -- pure builders -------------------------------------------------------------

def skeleton() -> list[dict[str, Any]]:
    """Commands that create the inet table, its chains and the jump rules."""
    t = {"family": "inet", "table": TABLE}
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": "inet", "name": TABLE}}}]
    chains = [
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
        ("guard", "filter", "prerouting", -300),
    ]
    for name, ctype, hook, prio in chains:
        cmds.append({"add": {"chain": {**t, "name": name, "type": ctype, "hook": hook,
                                       "prio": prio, "policy": "accept"}}})
    cmds.append({"add": {"chain": {**t, "name": "ports"}}})
    return cmds


def base_rules() -> list[Rule]:
    jump = [_fib_daddr_local(), {"jump": {"target": "ports"}}]
    return [_rule("inet", "prerouting", BASE_COMMENT, jump),
            _rule("inet", "output", BASE_COMMENT, list(jump))]


def bridge_rules(bridge: str, subnet: str) -> list[Rule]:
    """NAT for one bridge and its subnet."""
    net = ipaddress.ip_network(subnet, strict=False)
    ip = _ipproto(net.version)
    c = bridge_comment(bridge)
    rules = [
        # outbound: containers reach the world behind the host's address
        _rule("inet", "postrouting", c, [
            _match(_payload(ip, "saddr"), _prefix(net)),
            _match(_meta("oifname"), bridge, "!="),
            {"masquerade": None}]),
        # container -> published port -> container on the same bridge: the reply must
        # come back through the host, or the client sees the wrong source.
        _rule("inet", "postrouting", c, [
            _match(_meta("oifname"), bridge),
            _match({"ct": {"key": "status"}}, "dnat", "in"),
            _match(_payload(ip, "saddr"), _prefix(net)),
            {"masquerade": None}]),
    ]
    if net.version == 4:
        loopback = ipaddress.ip_network("127.0.0.0/8")
        rules += [
            # host connects to 127.0.0.1:PORT; the DNATed packet leaves with a loopback
            # source that only route_localnet lets out, and that masquerade replaces.
            _rule("inet", "postrouting", c, [
                _match(_meta("oifname"), bridge),
                _match(_payload("ip", "saddr"), _prefix(loopback)),
                {"masquerade": None}]),
            _rule("inet", "guard", c, [
                _match(_meta("iifname"), bridge),
                _match(_payload("ip", "daddr"), _prefix(loopback)),
                {"drop": None}]),
        ]
    return rules


def _port_targets(host_ip: str, addresses: list[str]) -> list[tuple[int, str]]:
    """(ip version, container address) pairs a published port DNATs to."""
    wanted: set[int]
    if host_ip == "0.0.0.0":
        wanted = {4, 6}
    elif host_ip == "::":
        wanted = {6}
    else:
        wanted = {ipaddress.ip_address(host_ip).version}
    out: list[tuple[int, str]] = []
    for text in addresses:
        ip = ipaddress.ip_interface(text).ip
        if ip.version in wanted and all(v != ip.version for v, _ in out):
            out.append((ip.version, str(ip)))
    return out


def port_rules(container_id: str, addresses: list[str], ports: list[dict[str, Any]]) -> list[Rule]:
    """One DNAT rule per published port and address family."""
    c = container_comment(container_id)
    rules = []
    for port in ports:
        host_ip = port.get("host_ip", "0.0.0.0")
        proto = port.get("protocol", "tcp")
        for version, addr in _port_targets(host_ip, addresses):
            ip = _ipproto(version)
            expr = [_match(_meta("nfproto"), "ipv4" if version == 4 else "ipv6")]
            if host_ip not in ("0.0.0.0", "::"):
                expr.append(_match(_payload(ip, "daddr"), host_ip))
            expr += [
                _match(_payload(proto, "dport"), int(port["host_port"])),
                {"dnat": {"family": ip, "addr": addr, "port": int(port["container_port"])}},
            ]
            rules.append(_rule("inet", "ports", c, expr))
    return rules


def isolation_rules(container_id: str, host_if: str) -> list[Rule]:
    c = container_comment(container_id)
    return [_rule("bridge", "isolate", c, [_match(_meta("iifname"), host_if), {"drop": None}]),
            _rule("bridge", "isolate", c, [_match(_meta("oifname"), host_if), {"drop": None}])]


def bridge_table_skeleton() -> list[dict[str, Any]]:
    return [{"add": {"table": {"family": "bridge", "name": TABLE}}},
            {"add": {"chain": {"family": "bridge", "table": TABLE, "name": "isolate",
                               "type": "filter", "hook": "forward", "prio": 0,
                               "policy": "accept"}}}]


# -- kernel side (call under the network lock) -------------------------------------

def _rules_of(listing: list[dict[str, Any]] | None) -> list[Rule]:
    return [item["rule"] for item in listing or [] if "rule" in item]


def _delete(rule: Rule) -> dict[str, Any]:
    return {"delete": {"rule": {"family": rule["family"], "table": rule["table"],
                                "chain": rule["chain"], "handle": rule["handle"]}}}


def _add(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    return [{"add": {"rule": r}} for r in rules]


def install_bridge(bridge: str, subnet: str) -> None:
    """Create the inet table if needed and the bridge's NAT rules if missing."""
    listing = nft.list_table("inet", TABLE)
    rules = _rules_of(listing)
    comments = {r.get("comment") for r in rules}
    cmds: list[dict[str, Any]] = skeleton()  # "add" of an existing table/chain is a no-op
    if BASE_COMMENT not in comments:
        cmds += _add(base_rules())
    if bridge_comment(bridge) not in comments:
        cmds += _add(bridge_rules(bridge, subnet))
    nft.run(cmds)


def install_container(container_id: str, host_if: str, addresses: list[str],
                      ports: list[dict[str, Any]], isolate: bool) -> None:
    """Replace the container's rules (ports, isolation) in one transaction."""
    c = container_comment(container_id)
    cmds: list[dict[str, Any]] = []
    inet = nft.list_table("inet", TABLE)
    bridge = nft.list_table("bridge", TABLE)
    cmds += [_delete(r) for r in _rules_of(inet) + _rules_of(bridge) if r.get("comment") == c]
    if ports:
        if inet is None:
            cmds += skeleton()
        cmds += _add(port_rules(container_id, addresses, ports))
    if isolate:
        cmds += bridge_table_skeleton()
        cmds += _add(isolation_rules(container_id, host_if))
    nft.run(cmds)


def remove_owned(comment: str) -> int:
    """Delete every rule of ours carrying ``comment``; returns how many."""
    rules = [r for fam in ("inet", "bridge") for r in _rules_of(nft.list_table(fam, TABLE))
             if r.get("comment") == comment]
    nft.run([_delete(r) for r in rules])
    return len(rules)


def remove_container(container_id: str) -> int:
    return remove_owned(container_comment(container_id))


def remove_bridge(bridge: str) -> int:
    return remove_owned(bridge_comment(bridge))


def drop_unused_tables() -> list[str]:
    """Delete our tables once only the jump rules (or nothing) remain in them."""
    dropped = []
    for family in ("inet", "bridge"):
        listing = nft.list_table(family, TABLE)
        if listing is None:
            continue
        if all(r.get("comment") == BASE_COMMENT for r in _rules_of(listing)):
            nft.run([{"delete": {"table": {"family": family, "name": TABLE}}}])
            dropped.append(family)
    return dropped


def our_tables() -> list[str]:
    """``family name`` of each of our tables present in this namespace."""
    return [f"{item['table']['family']} {item['table']['name']}"
            for item in nft.run([{"list": {"tables": None}}])
            if "table" in item and item["table"]["name"] == TABLE]
