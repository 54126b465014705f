"""Errors of the front end itself (everything else is execdriver.errors)."""

from __future__ import annotations

from ..errors import InvalidArgument


class UsageError(InvalidArgument):
    """A bad command line."""


class JSONInputError(InvalidArgument):
    """A JSON file from the user (config.json, exec --process, update --resources)
    that cannot be read: ``what: reason``."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")
