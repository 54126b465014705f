"""``drivers``: every registered driver, whether it works on this host, and its features."""

from __future__ import annotations

import argparse
import shutil
import textwrap

from .output import print_json


def status_text(report: dict) -> str:
    if not report["loaded"]:
        return f"not loadable: {report['reason'].removeprefix('failed to load: ')}"
    if not report["available"]:
        return f"not available: {report['reason']}"
    return "available"


def cmd_drivers(args: argparse.Namespace) -> int:
    from execdriver.loader import discover

    reports = [r.to_dict() for r in discover()]
    if args.format == "json":
        print_json(reports)
        return 0
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    for i, r in enumerate(reports):
        if i:
            print()
        print(f"{r['name']}: {status_text(r)}")
        if r["description"]:
            print(textwrap.fill(r["description"], width, initial_indent="  ",
                                subsequent_indent="  "))
        if r["module"]:
            print(f"  entry point: {r['module']}")
        for key, value in sorted((r.get("details") or {}).items()):
            print(textwrap.fill(value, width, initial_indent=f"  {key}: ",
                                subsequent_indent="    "))
        if r["features"]:
            print(textwrap.fill(", ".join(r["features"]), width, initial_indent="  features: ",
                                subsequent_indent="    "))
    return 0
