"""A minimal D-Bus client: enough of the wire protocol to call systemd's manager.

The systemd cgroup driver (systemd.py) makes transient scope units with
StartTransientUnit, as runc's does. It talks to systemd directly on its private
socket (/run/systemd/private for root, $XDG_RUNTIME_DIR/systemd/private for a
user's manager), so neither dbus-daemon nor a D-Bus library is needed. Only what
those calls use is here: EXTERNAL authentication, method calls, their replies and
errors, and the marshalling of the basic types, arrays, structs, dict entries and
variants (little-endian). A variant is given as ``(signature, value)``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

from ...errors import StepFailed

_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "s": 4, "o": 4,
          "a": 4, "h": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}
_FIXED = {"n": "<h", "q": "<H", "i": "<i", "u": "<I", "h": "<I", "x": "<q", "t": "<Q",
          "d": "<d"}
METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
F_PATH, F_INTERFACE, F_MEMBER, F_ERROR_NAME, F_REPLY_SERIAL, F_DESTINATION = 1, 2, 3, 4, 5, 6
F_SIGNATURE = 8


class DBusError(Exception):
    """An error reply: its D-Bus error name and message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name, self.message = name, message


def split_signature(sig: str) -> list[str]:
    """The complete types of ``sig`` in order: "sa(sv)" -> ["s", "a(sv)"]."""
    out, i = [], 0
    while i < len(sig):
        j = _end_of(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _end_of(sig: str, i: int) -> int:
    c = sig[i]
    if c == "a":
        return _end_of(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while sig[j] != close:
            j = _end_of(sig, j)
        return j + 1
    if c not in _ALIGN:
        raise ValueError(f"D-Bus signature {sig!r}: unknown type {c!r}")
    return i + 1


class Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def put(self, t: str, value: Any) -> None:
        c = t[0]
        if c == "y":
            self.buf.append(value)
        elif c == "b":
            self.align(4)
            self.buf += struct.pack("<I", 1 if value else 0)
        elif c in _FIXED:
            self.align(_ALIGN[c])
            self.buf += struct.pack(_FIXED[c], value)
        elif c in "so":
            data = value.encode()
            self.align(4)
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif c == "g":
            data = value.encode()
            self.buf += bytes([len(data)]) + data + b"\0"
        elif c == "v":
            sig, inner = value
            self.put("g", sig)
            self.put(sig, inner)
        elif c == "a":
            self._array(t[1:], value)
        elif c == "(":
            self.align(8)
            for sub, item in zip(split_signature(t[1:-1]), value, strict=True):
                self.put(sub, item)
        else:
            raise ValueError(f"cannot marshal D-Bus type {t!r}")

    def _array(self, elem: str, value: Any) -> None:
        self.align(4)
        at = len(self.buf)
        self.buf += b"\0\0\0\0"
        self.align(_ALIGN[elem[0]])
        start = len(self.buf)
        if elem[0] == "{":
            key, val = split_signature(elem[1:-1])
            for k, v in value.items():
                self.align(8)
                self.put(key, k)
                self.put(val, v)
        else:
            for item in value:
                self.put(elem, item)
        struct.pack_into("<I", self.buf, at, len(self.buf) - start)


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def get(self, t: str) -> Any:
        c = t[0]
        if c == "y":
            self.pos += 1
            return self.data[self.pos - 1]
        if c == "b":
            return bool(self._fixed("<I", 4))
        if c in _FIXED:
            return self._fixed(_FIXED[c], _ALIGN[c])
        if c in "so":
            n = self._fixed("<I", 4)
            s = self.data[self.pos:self.pos + n].decode()
            self.pos += n + 1
            return s
        if c == "g":
            n = self.data[self.pos]
            s = self.data[self.pos + 1:self.pos + 1 + n].decode()
            self.pos += n + 2
            return s
        if c == "v":
            sig = self.get("g")
            return sig, self.get(sig)
        if c == "a":
            return self._array(t[1:])
        if c == "(":
            self.align(8)
            return tuple(self.get(sub) for sub in split_signature(t[1:-1]))
        raise ValueError(f"cannot unmarshal D-Bus type {t!r}")

    def _fixed(self, fmt: str, size: int) -> Any:
        self.align(size)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def _array(self, elem: str) -> Any:
        n = self._fixed("<I", 4)
        self.align(_ALIGN[elem[0]])
        end = self.pos + n
        if elem[0] == "{":
            key, val = split_signature(elem[1:-1])
            out: dict[Any, Any] = {}
            while self.pos < end:
                self.align(8)
                k = self.get(key)
                out[k] = self.get(val)
            return out
        items = []
        while self.pos < end:
            items.append(self.get(elem))
        return items


def method_call(serial: int, path: str, interface: str, member: str, destination: str | None,
                signature: str, args: Iterable[Any]) -> bytes:
    body = Writer()
    for t, arg in zip(split_signature(signature), args, strict=True):
        body.put(t, arg)
    fields: list[tuple[int, tuple[str, Any]]] = [
        (F_PATH, ("o", path)), (F_INTERFACE, ("s", interface)), (F_MEMBER, ("s", member))]
    if destination:
        fields.append((F_DESTINATION, ("s", destination)))
    if signature:
        fields.append((F_SIGNATURE, ("g", signature)))
    head = Writer()
    for byte in (ord("l"), METHOD_CALL, 0, 1):
        head.put("y", byte)
    head.put("u", len(body.buf))
    head.put("u", serial)
    head.put("a(yv)", fields)
    head.align(8)
    return bytes(head.buf + body.buf)


def parse_message(data: bytes) -> tuple[int, dict[int, Any], Any, int]:
    """(type, header fields, body values, total length) of the message at the start
    of ``data``; total length 0 when ``data`` does not hold all of it yet."""
    if len(data) < 16:
        return 0, {}, None, 0
    if data[0:1] != b"l":
        raise DBusError("execdriver.BigEndian", "big-endian D-Bus messages are not supported")
    body_len, _serial, fields_len = struct.unpack_from("<III", data, 4)
    header_end = 16 + fields_len + (-(16 + fields_len) % 8)
    total = header_end + body_len
    if len(data) < total:
        return 0, {}, None, 0
    r = Reader(data, 12)
    fields = {code: value for code, (_sig, value) in r.get("a(yv)")}
    sig = fields.get(F_SIGNATURE, "")
    body = Reader(data[header_end:total])
    values = [body.get(t) for t in split_signature(sig)]
    return data[1], fields, values, total


class Connection:
    """One authenticated connection to a D-Bus peer (systemd's private socket)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self.serial = 0
        self.pending = b""
        try:
            self.sock.connect(path)
            uid = str(os.geteuid()).encode().hex()
            self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
            line = self._line()
            if not line.startswith(b"OK"):
                raise DBusError("execdriver.AuthFailed", line.decode(errors="replace").strip())
            self.sock.sendall(b"BEGIN\r\n")
        except BaseException:
            self.sock.close()
            raise

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise DBusError("execdriver.Disconnected", "the peer closed the connection")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, path: str, interface: str, member: str, signature: str = "",
             args: Iterable[Any] = (), destination: str | None = None) -> list[Any]:
        """The reply's values; DBusError for an error reply."""
        self.serial += 1
        serial = self.serial
        self.sock.sendall(method_call(serial, path, interface, member, destination,
                                      signature, args))
        while True:
            kind, fields, values, total = parse_message(self.pending)
            if not total:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise DBusError("execdriver.Disconnected", "the peer closed the connection")
                self.pending += chunk
                continue
            self.pending = self.pending[total:]
            if fields.get(F_REPLY_SERIAL) != serial:
                continue                # a signal, or a reply to nothing of ours
            if kind == ERROR:
                raise DBusError(fields.get(F_ERROR_NAME, "?"), values[0] if values else "")
            return values


def connect_systemd(timeout: float = 10.0) -> Connection:
    """systemd's private socket: the system manager's for root, the user's manager's
    ($XDG_RUNTIME_DIR/systemd/private) otherwise. StepFailed naming it if it is not there."""
    if os.geteuid() == 0:
        path = "/run/systemd/private"
    else:
        path = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}",
                            "systemd", "private")
    try:
        return Connection(path, timeout)
    except (OSError, DBusError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StepFailed("systemd", f"systemd is not reachable at {path} ({why}): the systemd "
                         "cgroup driver needs systemd as the init system") from None
