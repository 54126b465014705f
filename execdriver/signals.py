"""Signal names and numbers, as users write them (a leaf: the hot verbs import it)."""

from __future__ import annotations

import signal as _signal

from .errors import InvalidArgument


def parse_signal(value: str | int) -> int:
    """``KILL``, ``SIGKILL``, ``sigkill`` or ``9`` -> 9; anything else is InvalidArgument."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        num = int(value)
        if 1 <= num < _signal.SIGRTMAX + 1:
            return num
        raise InvalidArgument(f"signal {value}: out of range")
    name = str(value).strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise InvalidArgument(f"signal {value!r}: unknown signal name") from None
