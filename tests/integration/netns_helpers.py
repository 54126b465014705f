"""Helpers shared by the network tests (their fixtures are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from execdriver.kernel import network
from execdriver.spec import Network


def host_ours() -> tuple[list[str], str]:
    """Our links and nftables tables in the host's namespace (there must be none)."""
    names = sorted(n for n in os.listdir("/sys/class/net") if n.startswith(("vexd", "execdriver")))
    tables = subprocess.run(["nft", "list", "tables"], check=False, capture_output=True,
                            text=True).stdout
    return names, "\n".join(t for t in tables.splitlines() if "execdriver" in t)


def plan_and_setup(cid: str, net: Network, root: Path, pid: int) -> dict[str, Any]:
    """Plan and set up ``cid``'s network for the init ``pid`` (run it through ns.call)."""
    p = network.plan(cid, net, root)
    network.setup(p, pid)
    return p.record()
