"""What the OCI front end adds to the core's state: its root, runc's messages, pid files.

The record, its lock and writes, the status logic and the lifecycle are the
core's (execdriver.state.StateStore, execdriver.libcontainer.Container); the
verbs an orchestrator calls all the time (state, start, kill, delete) go
through them without pydantic, stevedore or a driver.
"""

from __future__ import annotations

import os

from ..errors import InvalidState
from ..libcontainer.container import OCI_VERSION, Container
from ..state import StateStore, write_atomic

DEFAULT_ROOT = "/run/execdriver-oci"
DRIVER = "native"     # the name execdriver-oci's containers carry in the record

__all__ = ["DEFAULT_ROOT", "DRIVER", "OCI_VERSION", "load", "not_running", "not_stopped",
           "write_pid_file"]


def load(root: str, container_id: str) -> Container:
    """The container ``container_id`` under ``root`` (ContainerNotFound, InvalidArgument)."""
    return Container.load(StateStore(root), container_id)


# --- runc's error messages (podman and containerd match on these) -----------

def not_running() -> InvalidState:
    return InvalidState("container not running", step="kill")


def not_stopped(container_id: str, status: str) -> InvalidState:
    return InvalidState(f"cannot delete container {container_id} that is not stopped: {status}",
                        container_id=container_id, step="delete")


def write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` atomically (a reader never sees an empty file), like runc."""
    write_atomic(os.path.abspath(path), str(pid), mode=0o644)
