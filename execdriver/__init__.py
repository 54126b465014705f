"""execdriver: run Linux containers through pluggable execution drivers.

The public API is imported lazily so ``import execdriver`` stays cheap::

    import execdriver
    driver = execdriver.load_driver("native")
    spec = execdriver.validate_spec({"root": {"path": "/srv/rootfs"},
                                     "process": {"args": ["/bin/true"]}})
    status = driver.run("web1", spec)
"""

from __future__ import annotations

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

    # What __getattr__ hands out, for type checkers (py.typed): the same table.
    from .driver import (  # noqa: F401 - re-exported (see _EXPORTS)
        Availability,
        ContainerInfo,
        Event,
        ExecDriver,
        ExecResult,
        ExitStatus,
        Handle,
        Stats,
        Status,
        Stdio,
        parse_signal,
    )
    from .errors import (  # noqa: F401 - re-exported (see _EXPORTS)
        ContainerExists,
        ContainerNotFound,
        DriverLoadError,
        DriverNotFound,
        DriverUnavailable,
        ExecDriverError,
        ExecTimeout,
        ExitStatusLost,
        InvalidArgument,
        InvalidState,
        SpecError,
        StepFailed,
        UnsupportedFeature,
    )
    from .loader import discover, driver_names, load_driver  # noqa: F401 - re-exported (see _EXPORTS)
    from .spec import ALL_FEATURES, Process, Spec, features_used, load_spec, validate_spec  # noqa: F401 - re-exported (see _EXPORTS)
    from .state import ContainerState, StateStore, validate_id  # noqa: F401 - re-exported (see _EXPORTS)

__version__ = "0.1.0"

_EXPORTS = {
    "ExecDriver": "driver", "ExitStatus": "driver", "ContainerInfo": "driver",
    "Stats": "driver", "Status": "driver", "Stdio": "driver", "Handle": "driver",
    "Availability": "driver", "parse_signal": "driver",
    "Spec": "spec", "Process": "spec", "validate_spec": "spec", "load_spec": "spec",
    "features_used": "spec", "ALL_FEATURES": "spec",
    "load_driver": "loader", "discover": "loader", "driver_names": "loader",
    "StateStore": "state", "ContainerState": "state", "validate_id": "state",
    "ExecDriverError": "errors", "SpecError": "errors", "UnsupportedFeature": "errors",
    "DriverNotFound": "errors", "DriverLoadError": "errors", "DriverUnavailable": "errors",
    "ContainerNotFound": "errors", "ContainerExists": "errors", "InvalidArgument": "errors",
    "InvalidState": "errors", "StepFailed": "errors", "ExitStatusLost": "errors",
    "ExecTimeout": "errors", "ExecResult": "driver",
    "Event": "driver",
}

__all__ = sorted(_EXPORTS) + ["__version__"]  # noqa: PLE0605 - one table: _EXPORTS


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'execdriver' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"execdriver.{mod}"), name)
    globals()[name] = value
    return value
