"""Container networking for the kernel layer (see docs/networking.md).

The native driver calls, from the runtime's (host-side) process::

    p = plan(cid, spec.network, state_root)     # names + IPAM lease, nothing created
    store.record(cid, "network", p.record())    # before anything exists
    setup(p, container_pid)                     # bridge, veth, addresses, routes, nft
    files = write_etc_files(p, state_dir, spec.hostname, spec.network.dns)
    ...
    teardown(record)                            # idempotent, from the record alone

Modes: ``none`` (own netns, only lo up), ``host``, ``bridge`` and
``container``/``netns`` (the driver joins an existing namespace; nothing to do
here). pyroute2 is imported only when a kernel-facing function runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import write_files as _write_files
from .lifecycle import leftovers, reclaim_orphans, setup, teardown
from .planner import NetworkPlan, plan, veth_name
from .stats import interface_stats, parse_net_dev

__all__ = [
    "NetworkPlan",
    "interface_stats",
    "leftovers",
    "parse_net_dev",
    "plan",
    "reclaim_orphans",
    "setup",
    "teardown",
    "veth_name",
    "write_etc_files",
]


def write_etc_files(plan: NetworkPlan | dict[str, Any], dest_dir: Path, hostname: str | None,
                    dns: list[str]) -> dict[str, str]:
    """Write hosts, hostname and resolv.conf into ``dest_dir``.

    Returns ``{"/etc/hosts": path, "/etc/hostname": path, "/etc/resolv.conf": path}``
    for the init to bind-mount. ``dns`` (or else the plan's) overrides the host's
    nameservers.
    """
    p = plan if isinstance(plan, NetworkPlan) else NetworkPlan.from_record(plan)
    return _write_files(Path(dest_dir), p.container_id, p.mode, p.addresses, hostname,
                        list(dns) or list(p.dns))


