"""The qemu micro-VM execdriver driver, shipped as a separate distribution."""

from typing import Any

__all__ = ["QemuDriver"]


def __getattr__(name: str) -> Any:
    # lazy: the monitor (python -m execdriver_qemu.monitor) stays light
    if name == "QemuDriver":
        from .driver import QemuDriver
        return QemuDriver
    raise AttributeError(name)
