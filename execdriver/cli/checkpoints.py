"""``checkpoint`` and ``restore``: save a running container's processes with CRIU and
bring them back (the same container, or a copy under a new id)."""

from __future__ import annotations

import argparse
import os

from .containers import driver_for

#: where checkpoints go without --image-path: beside the containers, in a directory no
#: container id can name
CHECKPOINTS_DIR = ".checkpoints"


def default_image_path(root: str, container_id: str) -> str:
    from execdriver.state import validate_id
    return os.path.join(root, CHECKPOINTS_DIR, validate_id(container_id))


def cmd_checkpoint(args: argparse.Namespace) -> int:
    driver, _ = driver_for(args.root, args.id)
    path = os.path.abspath(args.image_path or default_image_path(args.root, args.id))
    driver.checkpoint(args.id, path, leave_running=args.leave_running,
                      tcp_established=args.tcp_established, file_locks=args.file_locks,
                      work_dir=args.work_path)
    print(path)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from execdriver.cli.parser import UsageError
    from execdriver.libcontainer.checkpoint import read_metadata
    from execdriver.loader import load_driver

    if not args.id and not args.image_path:
        raise UsageError("give the checkpointed container's ID, or --image-path DIR",
                         "execdriver restore")
    path = os.path.abspath(args.image_path or default_image_path(args.root, args.id))
    meta = read_metadata(path)
    new_id = args.name or args.id or str(meta["id"])
    driver = load_driver(str(meta.get("driver") or "native"), args.root)
    handle = driver.restore(new_id, path, work_dir=args.work_path)
    handle.close()
    print(new_id)
    return 0
