"""Errors of the front end itself (everything else is execdriver.errors)."""

from __future__ import annotations

from ..errors import InvalidArgument


class UsageError(InvalidArgument):
    """A bad command line."""
