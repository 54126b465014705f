"""Per-interface counters of a process's network namespace (``/proc/<pid>/net/dev``).

``/proc/<pid>/net`` shows the netns of that pid, so no namespace switch is needed.
"""

from __future__ import annotations

from ...errors import StepFailed

# column order of /proc/net/dev after "iface:"
_RX = ("bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast")
_TX = ("bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed")
_KEEP = {"rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes", "tx_packets",
         "tx_errs", "tx_drop"}


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """``{"eth0": {"rx_bytes": .., "rx_packets": .., "tx_bytes": .., ...}, ...}``."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        name, _, rest = line.partition(":")
        name = name.strip()
        fields = rest.split()
        if not name or len(fields) < 16 or not all(f.isdigit() for f in fields[:16]):
            continue
        keys = [f"rx_{k}" for k in _RX] + [f"tx_{k}" for k in _TX]
        # (a line may carry more columns than the 16 named: the rest are not ours)
        out[name] = {k: int(v) for k, v in zip(keys, fields, strict=False) if k in _KEEP}
    return out


def interface_stats(pid: int) -> dict[str, dict[str, int]]:
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            return parse_net_dev(f.read())
    except OSError as exc:
        raise StepFailed("network stats", exc.strerror or str(exc), errno=exc.errno,
                         pid=pid) from None
