"""libnftables through ctypes, speaking its JSON API.

libnftables is the netfilter project's own library behind the ``nft`` command;
a batch of JSON commands is one kernel transaction (all or nothing). Debian's
``python3-nftables`` is a thin ctypes wrapper around the same calls, but it
lives in dist-packages, which our venv does not see, so we make the few calls
ourselves. A context is made per batch, in the calling thread, so the rules go
to the network namespace of whoever calls (netlink sockets are per netns).
"""

from __future__ import annotations

import ctypes
import json
import threading
from typing import Any

LIBRARY = "libnftables.so.1"

# enum nft_output_flags (libnftables.h)
OUTPUT_HANDLE = 1 << 3
OUTPUT_JSON = 1 << 4
OUTPUT_ECHO = 1 << 5

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


class NftError(Exception):
    """libnftables refused a batch; the message is nft's own error text."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing  # the object named does not exist (ENOENT)


def _load() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(LIBRARY)
            except OSError as exc:
                raise NftError(f"cannot load {LIBRARY} (apt-get install libnftables1): {exc}") \
                    from None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            _lib = lib
        return _lib


def available() -> bool:
    try:
        _load()
    except NftError:
        return False
    return True


def run(commands: list[dict[str, Any]], echo: bool = False) -> list[dict[str, Any]]:
    """Run JSON commands (``[{"add": {...}}, ...]``) as one transaction.

    Returns the JSON objects nft printed (listings, or the echoed objects with
    their handles when ``echo``), without the metainfo entry.
    """
    if not commands:
        return []
    lib = _load()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise NftError("nft_ctx_new failed")
    try:
        flags = OUTPUT_JSON | OUTPUT_HANDLE | (OUTPUT_ECHO if echo else 0)
        lib.nft_ctx_output_set_flags(ctx, flags)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        payload = json.dumps({"nftables": commands}).encode()
        rc = lib.nft_run_cmd_from_buffer(ctx, payload)
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
    if rc != 0:
        message = " ".join(line.strip() for line in err.splitlines()
                           if line.strip() and not set(line.strip()) <= set("^~ ")) or \
            f"nft failed (rc={rc})"
        raise NftError(message, missing="No such file or directory" in err)
    if not out.strip():
        return []
    items = json.loads(out).get("nftables", [])
    return [item for item in items if "metainfo" not in item]


def list_table(family: str, name: str) -> list[dict[str, Any]] | None:
    """The table's objects (table, chains, rules), or None if there is no such table."""
    try:
        return run([{"list": {"table": {"family": family, "name": name}}}])
    except NftError as exc:
        if exc.missing:
            return None
        raise


def list_ruleset() -> list[dict[str, Any]]:
    return run([{"list": {"ruleset": None}}])
