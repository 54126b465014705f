"""execdriver's libcontainer: the container lifecycle over the kernel layer.

Input: a plain-data :class:`execdriver.config.Config` (``specconv.config_from_spec``
makes one from a validated spec). :class:`Container` is the one API the native and
chroot drivers and ``execdriver-oci`` use. No pydantic, no stevedore, no driver here.
"""

from __future__ import annotations

from ..config import Config, RootMode
from ..state import StateStore
from .container import Container

__all__ = ["Config", "Container", "RootMode", "StateStore"]
