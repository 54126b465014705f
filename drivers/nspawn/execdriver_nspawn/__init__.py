"""The systemd-nspawn execdriver driver, shipped as a separate distribution."""

from .driver import NspawnDriver

__all__ = ["NspawnDriver"]
