"""Resident memory of a process, measured from /proc/<pid>/smaps_rollup."""

from __future__ import annotations

from typing import Any

KEYS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty")


def smaps_rollup(pid: int) -> dict[str, Any]:
    """kB values of KEYS plus ``Uss`` (private clean + dirty) and the pid; {} if gone."""
    out: dict[str, Any] = {"pid": pid}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0].rstrip(":") in KEYS:
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return {}
    out["Uss"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out
