"""``spec``: print (or write) a driver's default spec, or the spec's JSON Schema."""

from __future__ import annotations

import argparse
import json
import os


def render_spec(args: argparse.Namespace) -> str:
    if args.schema:
        from execdriver.spec import json_schema
        return json.dumps(json_schema(), indent=2)
    from execdriver.loader import load_driver

    driver = load_driver(args.driver, args.root, check_available=False)
    spec = driver.default_spec(args.rootfs, list(args.command) or None)
    return spec.model_dump_json(indent=2)


def cmd_spec(args: argparse.Namespace) -> int:
    from execdriver.errors import InvalidArgument, step_error

    if args.output and os.path.exists(args.output) and not args.force:
        raise InvalidArgument(f"spec file={args.output}: exists (use --force to overwrite)")
    text = render_spec(args) + "\n"
    if not args.output:
        print(text, end="")
        return 0
    try:
        with open(args.output, "w") as f:
            f.write(text)
    except OSError as exc:
        raise step_error("spec write", exc, file=args.output) from None
    return 0
