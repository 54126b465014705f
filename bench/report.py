"""Summaries, the printed table, the JSON file and the PNG chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

# issue 13's density targets: 1000 containers, list/stats of them under 0.5 s, each
# keeping at most 0.1 MiB (the monitor's private memory)
LIST_TARGET = 0.5
MEMORY_TARGET = 0.1


def summary(samples: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples), "samples": samples}


def _ms(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['median'] * 1e3:7.1f} ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f})"


def rows(results: dict[str, Any]) -> list[list[str]]:
    """Table rows: case, ours, anchor, ratio, target, verdict."""
    out = []
    for c in results["cases"]:
        target = "-" if c["target"] is None else f"<= {c['target']}"
        if c["status"] != "ok":
            out.append([c["name"], c["title"], "-", c.get("anchor_title", "-"), "-", "-",
                        target, f"{c['status']}: {c['reason']}"])
            continue
        verdict = "informational" if c["target"] is None else "met" if c["met"] else \
            f"NOT met (x{c['ratio'] / c['target']:.2f} over)"
        out.append([c["name"], c["title"], _ms(c["ours"]), c["anchor_title"], _ms(c["anchor"]),
                    f"{c['ratio']:.2f}", target, verdict])
    t = results.get("threads")
    if t and t.get("status") == "ok":
        ours, anc = statistics.median(t["ours"]), statistics.median(t["anchor"])
        out.append(["threads", f"driver.run(true) from {t['threads']} threads (runs/s)",
                    f"{ours:.1f}", f"runc run from {t['threads']} threads", f"{anc:.1f}",
                    f"{t['ratio']:.2f}", f">= {t['target']}",
                    "met" if t["met"] else f"NOT met (x{t['target'] / t['ratio']:.2f} short)"])
    elif t:
        out.append(["threads", "driver.run(true) from threads", "-", "runc", "-", "-",
                    f">= {t.get('target', '-')}", f"{t.get('status')}: {t.get('reason')}"])
    d = results.get("density")
    if d and d.get("status") == "ok":
        n = d["n"]
        for key, label, target in (("start_seconds", f"start {n} detached (API)", "ratio <= 1.0"),
                                   ("list_seconds", f"list {n} (API)", "< 0.5 s"),
                                   ("stats_seconds", f"stats of {n} (API)", "< 0.5 s"),
                                   ("cli_list_seconds", f"execdriver list, {n} running", "< 0.5 s"),
                                   ("cli_stats_seconds", f"execdriver stats, {n} running",
                                    "< 0.5 s")):
            if not d["ours"].get(key):
                continue
            akey = key.replace("cli_", "")
            ours = statistics.median(d["ours"][key]) if d["ours"][key] else None
            anc = statistics.median(d["anchor"][akey]) if d["anchor"].get(akey) else None
            ratio = ours / anc if ours is not None and anc else None
            if key == "start_seconds":
                met = ratio is not None and ratio <= 1.0
            else:
                met = ours is not None and ours < LIST_TARGET
            out.append(["density", label, f"{ours:.3f} s" if ours is not None else "-",
                        {"start_seconds": "runc run -d", "list_seconds": "runc list",
                         "stats_seconds": "runc events --stats (each)"}.get(akey, "runc"),
                        f"{anc:.3f} s" if anc is not None else "-",
                        f"{ratio:.2f}" if ratio is not None else "-", target,
                        "met" if met else "NOT met"])
        u, p = d["monitor_uss_mib"], d["monitor_pss_mib"]
        if u["median"] is not None:
            out.append(["density", "memory kept per container (API)",
                        f"USS {u['median']:.2f} MiB (PSS {p['median']:.2f})", "runc", "0 (no monitor)",
                        "-", f"<= {MEMORY_TARGET} MiB", "met" if u["median"] <= MEMORY_TARGET else "NOT met"])
        cli = d.get("cli") or {}
        if cli.get("monitor_uss_mib") is not None:
            out.append(["density", "memory kept per container (CLI -d)",
                        f"USS {cli['monitor_uss_mib']:.2f} MiB (PSS {cli['monitor_pss_mib']:.2f})",
                        "runc", "0 (no monitor)", "-", f"<= {MEMORY_TARGET} MiB",
                        "met" if cli["monitor_uss_mib"] <= MEMORY_TARGET else "NOT met"])
    elif d:
        out.append(["density", f"{d.get('n')} detached containers", "-", "runc", "-", "-", "",
                    f"{d.get('status')}: {d.get('reason')}"])
    return out


HEADER = ["case", "what", "ours ms median (min-max)", "anchor", "anchor ms median (min-max)",
          "ratio", "target", "verdict"]


def table(results: dict[str, Any]) -> str:
    data = [HEADER] + rows(results)
    widths = [max(len(r[i]) for r in data) for i in range(len(HEADER))]
    lines = []
    for i, r in enumerate(data):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    data = rows(results)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in data]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Ratios against targets, and the medians in ms; None if written, else why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (.venv/bin/pip install matplotlib)"
    # (informational cases, a VM boot, would only stretch both scales)
    cases = [c for c in results["cases"] if c["status"] == "ok" and c["target"] is not None]
    d = results.get("density") or {}
    labels, ratios, targets = [], [], []
    for c in cases:
        labels.append(c["name"])
        ratios.append(c["ratio"])
        targets.append(c["target"])
    if d.get("status") == "ok" and d["ours"]["start_seconds"] and d["anchor"]["start_seconds"]:
        labels.append(f"density start ({d['n']})")
        ratios.append(statistics.median(d["ours"]["start_seconds"])
                      / statistics.median(d["anchor"]["start_seconds"]))
        targets.append(1.0)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    y = range(len(labels))
    colors = ["tab:green" if r <= t else "tab:red" for r, t in zip(ratios, targets, strict=True)]
    ax1.barh(list(y), ratios, color=colors)
    for i, (r, t) in enumerate(zip(ratios, targets, strict=True)):
        ax1.plot([t, t], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax1.text(r, i, f" {r:.2f}", va="center", fontsize=9)
    ax1.set_yticks(list(y), labels)
    ax1.invert_yaxis()
    ax1.set_xlabel("ratio ours / anchor (median; black bar = target)")
    ax1.set_title("execdriver vs anchors")
    names = [c["name"] for c in cases]
    ours = [c["ours"]["median"] * 1e3 for c in cases]
    anc = [c["anchor"]["median"] * 1e3 for c in cases]
    oerr = [[o - c["ours"]["min"] * 1e3 for o, c in zip(ours, cases, strict=True)],
            [c["ours"]["max"] * 1e3 - o for o, c in zip(ours, cases, strict=True)]]
    aerr = [[a - c["anchor"]["min"] * 1e3 for a, c in zip(anc, cases, strict=True)],
            [c["anchor"]["max"] * 1e3 - a for a, c in zip(anc, cases, strict=True)]]
    x = list(range(len(names)))
    ax2.bar([i - 0.2 for i in x], ours, 0.4, yerr=oerr, label="execdriver", capsize=3)
    ax2.bar([i + 0.2 for i in x], anc, 0.4, yerr=aerr, label="anchor", capsize=3)
    ax2.set_xticks(x, names)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms per container, start to exit (median, min-max)")
    ax2.set_title("absolute times")
    ax2.legend()
    m = results.get("machine", {})
    fig.suptitle(f"{m.get('cpus')} x {m.get('cpu')}, kernel {m.get('kernel')}, "
                 f"{results.get('rounds')} rounds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
