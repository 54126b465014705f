"""The host's ends of the guest's channels: the agent's frames, the signal port, QMP.

Light (standard library only): the monitor imports it.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

SIGNAL_TIMEOUT = 60.0
QMP_TIMEOUT = 10.0


class ChannelError(Exception):
    """A guest channel failed (the message says which and why)."""


def frame(kind: bytes, data: bytes = b"") -> bytes:
    """One agent frame: a type byte, a 4-byte big-endian length, the data."""
    return kind + struct.pack(">I", len(data)) + data


class FrameReader:
    """Frames out of a byte stream (``feed`` what arrives, ``frames`` what is complete)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 5:
            (length,) = struct.unpack(">I", self.buf[1:5])
            if len(self.buf) < 5 + length:
                break
            out.append((self.buf[:1], self.buf[5:5 + length]))
            self.buf = self.buf[5 + length:]
        return out


def _connect(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ChannelError(f"connect {path}: {exc.strerror or exc}") from None
    return sock


def send_signal(path: str, signum: int, *, all: bool = False,
                timeout: float = SIGNAL_TIMEOUT) -> None:
    """Ask the guest (its signal port, socket ``path``) to signal the container's process
    (every process of the guest but its PID 1 with ``all``); wait for its answer."""
    deadline = time.monotonic() + timeout
    with _connect(path, timeout) as sock:
        sock.sendall(f"{'a' if all else ''}{signum}\n".encode())
        answer = b""
        while b"\n" not in answer:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = sock.recv(64)
            except TimeoutError:
                raise ChannelError(f"signal {signum}: the guest did not answer within "
                                   f"{timeout:.0f}s") from None
            if not chunk:
                raise ChannelError(f"signal {signum}: the guest closed the channel")
            answer += chunk
    if not answer.startswith(b"ok"):
        raise ChannelError(f"signal {signum}: the guest could not deliver it "
                           "(the process has ended)")


def qmp(path: str, command: str, timeout: float = QMP_TIMEOUT) -> Any:
    """Run one QMP command on qemu's QMP socket; its ``return`` value."""
    with _connect(path, timeout) as sock:
        f = sock.makefile("rwb")

        def reply() -> dict[str, Any]:
            while True:
                line = f.readline()
                if not line:
                    raise ChannelError(f"qmp {command}: qemu closed the connection")
                msg: dict[str, Any] = json.loads(line)
                if "return" in msg or "error" in msg or "QMP" in msg:
                    return msg
        try:
            reply()     # the greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                msg = reply()
                if "error" in msg:
                    raise ChannelError(f"qmp {cmd}: {msg['error'].get('desc', msg['error'])}")
        except TimeoutError:
            raise ChannelError(f"qmp {command}: no answer within {timeout:.0f}s") from None
        return msg["return"]
