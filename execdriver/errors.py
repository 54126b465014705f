"""Typed errors, all under one root.

Messages read ``step key=value: cause`` so a user sees one line that says what
failed, on what, and why. The CLI prints ``str(err)`` and exits 125.
"""

from __future__ import annotations

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any


class ExecDriverError(Exception):
    """Root of every error execdriver raises on purpose."""

    def __init__(self, message: str, *, container_id: str | None = None,
                 driver: str | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.container_id = container_id
        self.driver = driver
        self.step = step

    def __str__(self) -> str:
        return self.message


class SpecError(ExecDriverError):
    """The spec is invalid. ``problems`` holds one ``path: reason`` per bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), step="validate")

    def lines(self) -> list[str]:
        return ["invalid spec: " + p for p in self.problems]


class UnsupportedFeature(ExecDriverError):
    """The spec asks for something the driver cannot do."""

    def __init__(self, driver: str, features: list[str]) -> None:
        self.features = sorted(features)
        super().__init__(
            f"driver {driver} does not support: {', '.join(self.features)}",
            driver=driver, step="validate")


class DriverNotFound(ExecDriverError):
    """No driver of that name is registered."""


class DriverLoadError(ExecDriverError):
    """A registered driver failed to import or instantiate."""


class DriverUnavailable(ExecDriverError):
    """The driver loaded but cannot work on this host (reason included)."""


class InvalidArgument(ExecDriverError):
    """Bad user input that is not part of a spec: an id, a signal, a path."""


class ContainerNotFound(ExecDriverError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id} does not exist",
                         container_id=container_id)


class ContainerExists(ExecDriverError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id} already exists",
                         container_id=container_id, step="create")


class InvalidState(ExecDriverError):
    """The operation does not fit the container's current status."""


class ExitStatusLost(ExecDriverError):
    """The container (or exec'd process) ended, but its exit status was not recorded:
    its monitor was killed, or it was removed before anyone held its record."""


class ExecTimeout(ExecDriverError):
    """exec_capture's process ran past its timeout and was killed; ``stdout`` and
    ``stderr`` hold what it wrote until then."""

    def __init__(self, message: str, *, stdout: bytes = b"", stderr: bytes = b"",
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.stdout, self.stderr = stdout, stderr


class UnsupportedHost(ExecDriverError):
    """This machine lacks what the runtime needs (an architecture, a kernel feature)."""


class StateCorrupt(ExecDriverError):
    """A state file could not be read as ours."""


class StepFailed(ExecDriverError):
    """A setup step failed: ``step key=value: cause``."""

    def __init__(self, step: str, cause: str, *, errno: int | None = None,
                 container_id: str | None = None, driver: str | None = None,
                 **context: object) -> None:
        self.errno = errno
        self.context = context
        ctx = "".join(f" {k}={v}" for k, v in context.items())
        super().__init__(f"{step}{ctx}: {cause}", container_id=container_id,
                         driver=driver, step=step)


def step_error(step: str, exc: BaseException, **context: Any) -> StepFailed:
    """Wrap an OSError (or anything) as a StepFailed naming the step."""
    if isinstance(exc, StepFailed):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        import os
        cause = os.strerror(exc.errno)
        if exc.filename:
            context.setdefault("path", exc.filename)
        return StepFailed(step, cause, errno=exc.errno, **context)
    return StepFailed(step, str(exc) or type(exc).__name__, **context)
