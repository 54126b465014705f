"""Driver discovery and loading: the one place that talks to stevedore."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DriverLoadError, DriverNotFound, DriverUnavailable

if TYPE_CHECKING:
    from .driver import ExecDriver

NAMESPACE = "execdriver.drivers"


_cache: tuple[tuple[tuple[str, float], ...], dict[str, Any]] | None = None


def _path_stamp() -> tuple[tuple[str, float], ...]:
    """sys.path with each directory's mtime: installing or removing a distribution
    changes its directory, so a cached scan is reused only while this is unchanged."""
    out = []
    for entry in sys.path:
        try:
            out.append((entry, os.stat(entry or ".").st_mtime))
        except OSError:
            out.append((entry, -1.0))
    return tuple(out)


def _entry_points() -> dict[str, Any]:
    # importlib.metadata is much cheaper than building a stevedore manager for
    # the single-driver hot path; stevedore is used for listing every driver.
    # The scan reads every installed distribution's metadata: once per process
    # while sys.path is unchanged (an embedding program loads drivers repeatedly).
    global _cache
    stamp = _path_stamp()
    if _cache is None or _cache[0] != stamp:
        from importlib.metadata import entry_points
        _cache = (stamp, {ep.name: ep for ep in entry_points(group=NAMESPACE)})
    return dict(_cache[1])


def driver_names() -> list[str]:
    return sorted(_entry_points())


def load_driver_class(name: str) -> type[ExecDriver]:
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise DriverNotFound(f"driver {name!r}: not found (available: {known})", driver=name)
    try:
        cls = eps[name].load()
    except Exception as exc:  # any import failure is the driver's
        raise DriverLoadError(f"load driver={name}: {type(exc).__name__}: {exc}",
                              driver=name, step="load") from exc
    from .driver import ExecDriver
    if not (isinstance(cls, type) and issubclass(cls, ExecDriver)):
        raise DriverLoadError(f"load driver={name}: {cls!r} is not an ExecDriver subclass",
                              driver=name, step="load")
    return cls


def load_driver(name: str, state_root: str | os.PathLike[str] | None = None,
                check_available: bool = True) -> ExecDriver:
    """Return an instance of the named driver; typed errors if it cannot be had."""
    cls = load_driver_class(name)
    if check_available:
        avail = cls.availability()
        if not avail.available:
            raise DriverUnavailable(f"driver {name}: not available on this host: {avail.reason}",
                                    driver=name)
    try:
        return cls(state_root=state_root)
    except Exception as exc:
        raise DriverLoadError(f"init driver={name}: {exc}", driver=name, step="init") from exc


@dataclass
class DriverReport:
    name: str
    loaded: bool
    available: bool
    reason: str
    features: list[str]
    description: str
    module: str
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def discover() -> list[DriverReport]:
    """Every registered driver, loaded through stevedore, with its availability."""
    from stevedore import ExtensionManager

    failures: dict[str, str] = {}

    def on_fail(_mgr: Any, ep: Any, exc: BaseException) -> None:
        failures[ep.name] = f"{type(exc).__name__}: {exc}"

    mgr = ExtensionManager(NAMESPACE, invoke_on_load=False,
                           on_load_failure_callback=on_fail)
    reports = []
    for ext in mgr:
        cls = ext.plugin
        try:
            avail = cls.availability()
            available, reason = avail.available, avail.reason
        except Exception as exc:  # noqa: BLE001
            available, reason = False, f"availability check failed: {exc}"
        try:
            details = dict(cls.details()) if hasattr(cls, "details") else {}
        except Exception as exc:  # noqa: BLE001 - a report, not a failure
            details = {"error": f"details failed: {exc}"}
        reports.append(DriverReport(ext.name, True, available, reason,
                                    sorted(getattr(cls, "features", ())),
                                    getattr(cls, "description", ""), ext.entry_point.value,
                                    details))
    for name, why in failures.items():
        reports.append(DriverReport(name, False, False, f"failed to load: {why}", [], "", ""))
    return sorted(reports, key=lambda r: r.name)
