"""An example third-party execdriver driver that runs containers with runc."""

from .driver import RuncExampleDriver

__all__ = ["RuncExampleDriver"]
