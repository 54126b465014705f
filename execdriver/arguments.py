"""Checking the arguments of the public driver API before a driver sees them.

``ExecDriver`` wraps every public verb of every driver class (its own and a third
party's overrides alike) with :func:`checked`: an argument of the wrong type or
value is an ``InvalidArgument`` naming the verb and the argument, never an
AttributeError from deep inside; a signal may be given by name ("TERM",
"SIGKILL", "9") and reaches the driver as a number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .errors import InvalidArgument

F = TypeVar("F", bound=Callable[..., Any])


def _id(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a container id (str), got {type(value).__name__}")
    from .state import validate_id
    return validate_id(value)


def _spec(value: object) -> object:
    from .spec import Spec
    if not isinstance(value, Spec):
        raise TypeError(f"expected an execdriver.Spec, got {type(value).__name__} "
                        "(make one with execdriver.validate_spec)")
    return value


def _process(value: object) -> object:
    from .spec import Process
    if not isinstance(value, Process):
        raise TypeError(f"expected an execdriver.Process, got {type(value).__name__} "
                        "(driver.process_for_exec(id, args) makes one)")
    return value


def _stdio(value: object) -> object:
    from .driver import Stdio
    if value is None:
        return None
    if not isinstance(value, Stdio):
        raise TypeError(f"expected an execdriver.Stdio or None, got {type(value).__name__}")
    for name in ("stdin", "stdout", "stderr"):
        fd = getattr(value, name)
        if fd is not None and (type(fd) is not int or fd < 0):
            raise TypeError(f"{name} must be a file descriptor (int >= 0) or None, got {fd!r}")
    return value


def _signal(value: object) -> int:
    from .signals import parse_signal
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"expected a signal number or name, got {type(value).__name__}")
    return parse_signal(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected True or False, got {value!r}")
    return value


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise TypeError(f"expected seconds (a number >= 0) or None, got {value!r}")
    return float(value)


def _interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TypeError(f"expected seconds (a number > 0), got {value!r}")
    return float(value)


def _callback(value: object) -> object:
    if value is not None and not callable(value):
        raise TypeError(f"expected a callable or None, got {type(value).__name__}")
    return value


def _changes(value: object) -> object:
    from collections.abc import Mapping
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()):
        raise TypeError("expected {section: {field: value}} (e.g. {'memory': {'limit': "
                        f"67108864}}}}), got {value!r}")
    return value


def _path(value: object) -> object:
    import os
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"expected a path (str or os.PathLike), got {value!r}")
    return value


def _optional_path(value: object) -> object:
    return None if value is None else _path(value)


CHECKS: dict[str, Callable[[Any], Any]] = {
    "container_id": _id, "spec": _spec, "process": _process, "stdio": _stdio,
    "signal": _signal, "detach": _flag, "all": _flag, "timeout": _timeout,
    "on_start": _callback, "interval": _interval, "changes": _changes,
    "image_dir": _path, "work_dir": _optional_path, "leave_running": _flag,
    "tcp_established": _flag, "file_locks": _flag,
}


def checked(func: F) -> F:
    """``func`` with each argument named in CHECKS checked (and normalised) first."""
    if getattr(func, "__checked__", False):
        return func
    verb = func.__name__
    sig: Any = None
    names: list[str] = []

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal sig, names
        if sig is None:         # on first use: inspect is not cheap to import
            import inspect
            sig = inspect.signature(func)
            names = [n for n in sig.parameters if n in CHECKS]
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(f"{verb}: {exc}") from None
        for name in names:
            if name in bound.arguments:
                try:
                    bound.arguments[name] = CHECKS[name](bound.arguments[name])
                except TypeError as exc:
                    raise InvalidArgument(f"{verb} {name}: {exc}") from None
        return func(*bound.args, **bound.kwargs)
    vars(wrapper)["__checked__"] = True
    return cast(F, wrapper)
