"""The monitor: owns one micro-VM (``mode: vm``) or one exec'd process (``mode: exec``).

vm: starts qemu with pipes for the guest's control, stdin, stdout and stderr ports,
relays the container's stdio between those pipes and its own fds 0-2 (the caller's,
or the container's log when detached), reports "started" once the guest says the
process runs, and the exit status the guest reports; qemu killed (SIGKILL from
``kill``/``terminate``) is 137, signal 9: the VM, and the process with it, is gone.

exec: connects to the guest agent's socket, sends the exec request, relays stdio as
frames, reports the exec'd process's exit status.

The protocol with the driver is execdriver.monitoring's; at the lifeline's EOF (a
foreground caller gone) the monitor kills the VM or the exec'd process. Run as
``python -m execdriver_qemu.monitor '<json config>'``.
"""

from __future__ import annotations

import base64
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from execdriver.monitoring import Monitor, exit_code

START_TIMEOUT = 300.0
CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except OSError:
            return      # the reader is gone: drop the output, as a closed pipe would
        data = data[n:]


def _tail(path: Path, n: int = 1) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


class StdinRelay:
    """fd 0 -> ``target`` without blocking the monitor on a guest that does not read."""

    def __init__(self, target: int) -> None:
        self.source: int | None = 0
        self.target: int | None = target
        self.pending = b""
        #: the socket once shut down (closed when the VM ends)
        self.finished: int | None = None
        os.set_blocking(target, False)

    def readers(self) -> list[int]:
        return [0] if self.source is not None and not self.pending and self.target is not None \
            else []

    def writers(self) -> list[int]:
        return [self.target] if self.pending and self.target is not None else []

    def on_readable(self) -> None:
        try:
            data = os.read(0, CHUNK)
        except OSError:
            data = b""
        if data:
            self.pending = data
        else:
            self.source = None
            if not self.pending:
                self.close()

    def on_writable(self) -> None:
        assert self.target is not None
        try:
            n = os.write(self.target, self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.pending = b""
            self.close()
            return
        self.pending = self.pending[n:]
        if not self.pending and self.source is None:
            self.close()

    def close(self) -> None:
        """EOF for the guest: shut our side down for writing, but keep the socket open
        (a closed one is a hang-up, and qemu would drop what it has not read yet)."""
        if self.target is not None:
            try:
                sock = socket.socket(fileno=os.dup(self.target))
                sock.shutdown(socket.SHUT_WR)
                sock.close()
            except OSError:
                pass
            self.finished = self.target
            self.target = None


def _connect_stdin(path: str, proc: subprocess.Popen[bytes]) -> int | None:
    """Our end of the guest's stdin port (a connected unix socket), once qemu listens."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            time.sleep(0.01)
            continue
        return sock.detach()
    return None


def run_vm(mon: Monitor, cfg: dict[str, Any]) -> int:
    from .vm import VmPlan, qemu_argv
    state_dir = Path(cfg["state_dir"])
    control_r, control_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    plan = VmPlan(**{**cfg["plan"], "files": {
        "control": f"/proc/self/fd/{control_w}", "stdout": f"/proc/self/fd/{out_w}",
        "stderr": f"/proc/self/fd/{err_w}"}})
    qemu_log = state_dir / "qemu.log"
    try:
        with open(qemu_log, "ab") as log:
            proc = subprocess.Popen(qemu_argv(plan), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log,
                                    pass_fds=(control_w, out_w, err_w),
                                    start_new_session=True)
    except OSError as exc:
        return mon.error(f"qemu: {exc.strerror or exc}")
    for fd in (control_w, out_w, err_w):
        os.close(fd)
    # stdin is a socket qemu listens on: closing our end is an EOF the guest sees (the
    # port's host side disconnects); the guest is still booting when we connect
    in_w = _connect_stdin(plan.sockets["stdin"], proc)
    if in_w is None:
        proc.kill()
        proc.wait()
        return mon.error(f"qemu exited with status {proc.returncode} "
                         f"({_tail(qemu_log) or 'no output'})")
    lifeline = mon.lifeline
    pidfd = os.pidfd_open(proc.pid)
    stdin = StdinRelay(in_w)
    outputs = {out_r: 1, err_r: 2}
    control = b""
    started = False
    guest_exit: tuple[int, int | None] | None = None
    guest_error = ""
    deadline = time.monotonic() + START_TIMEOUT
    while proc.returncode is None:
        readers = [pidfd, *outputs, *stdin.readers()] + ([control_r] if control_r >= 0 else []) \
            + ([lifeline] if lifeline is not None else [])
        timeout = None if started else max(0.0, deadline - time.monotonic())
        ready, writable, _ = select.select(readers, stdin.writers(), [], timeout)
        if not started and not ready and not writable:
            proc.kill()
            proc.wait()
            return mon.error(f"the guest did not start the process within {START_TIMEOUT:.0f}s"
                             f" ({_tail(state_dir / 'console.log') or 'no console output'})")
        for fd in ready:
            if fd in outputs:
                data = os.read(fd, CHUNK)
                if data:
                    _write_all(outputs[fd], data)
                else:
                    os.close(fd)
                    del outputs[fd]
            elif fd == control_r:
                data = os.read(control_r, 4096)
                control += data
                while b"\n" in control:
                    line, _, control = control.partition(b"\n")
                    words = line.decode(errors="replace").split()
                    if words[:1] == ["started"] and not started:
                        started = True
                        mon.started(proc.pid)
                    elif words[:1] == ["exit"] and len(words) == 3:
                        guest_exit = (int(words[1]), None if words[2] == "-" else int(words[2]))
                    elif words[:1] == ["error"]:
                        guest_error = " ".join(words[1:])
                if not data:
                    os.close(control_r)
                    control_r = -1
            elif fd == 0:
                stdin.on_readable()
            elif fd == lifeline:
                if not os.read(lifeline, 64):
                    lifeline = None     # the foreground caller is gone: the VM goes too
                    proc.kill()
            elif fd == pidfd:
                proc.wait()
        if writable:
            stdin.on_writable()
        if control_r < 0 and proc.returncode is None:
            proc.wait()     # qemu closed the control port: it is ending
    os.close(pidfd)
    for fd in list(outputs):    # what qemu wrote before it ended
        while data := os.read(fd, CHUNK):
            _write_all(outputs[fd], data)
        os.close(fd)
    stdin.close()
    if stdin.finished is not None:
        os.close(stdin.finished)
    if not started:
        why = guest_error or f"qemu exited with status {proc.returncode} " \
            f"({_tail(qemu_log) or _tail(state_dir / 'console.log') or 'no output'})"
        return mon.error(f"the guest did not start the process: {why}")
    if guest_exit is not None:
        code, sig = guest_exit
    elif proc.returncode == -signal.SIGKILL:
        code, sig = 128 + signal.SIGKILL, signal.SIGKILL   # the VM was killed
    else:
        code, sig = exit_code(None)
    mon.exited(code, sig)
    return 0


def run_exec(mon: Monitor, cfg: dict[str, Any]) -> int:
    from .channels import FrameReader, frame
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(30)
    try:
        sock.connect(cfg["agent"])
    except OSError as exc:
        return mon.error(f"guest agent {cfg['agent']}: {exc.strerror or exc}")
    sock.sendall(frame(b"x", base64.b64decode(cfg["process"])))
    sock.setblocking(False)
    reader = FrameReader()
    lifeline = mon.lifeline
    stdin_open = True
    started = False
    deadline = time.monotonic() + START_TIMEOUT
    status: tuple[int, int | None] | None = None
    while status is None:
        readers: list[Any] = [sock] + ([0] if stdin_open and started else []) + \
            ([lifeline] if lifeline is not None else [])
        ready, _, _ = select.select(readers, [], [],
                                    None if started else max(0.0, deadline - time.monotonic()))
        if not ready and not started:
            return mon.error(f"the guest agent did not start the process within "
                             f"{START_TIMEOUT:.0f}s")
        if sock in ready:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                data = b"?"
            if not data:
                break
            for kind, payload in reader.feed(data if data != b"?" else b""):
                if kind == b"p" and not started:
                    started = True
                    mon.started(os.getpid())
                elif kind == b"o":
                    _write_all(1, payload)
                elif kind == b"e":
                    _write_all(2, payload)
                elif kind == b"x":
                    words = payload.decode().split()
                    status = (int(words[0]), None if words[1] == "-" else int(words[1]))
        if 0 in ready:
            try:
                data = os.read(0, CHUNK)
            except OSError:
                data = b""
            sock.setblocking(True)
            sock.sendall(frame(b"i", data) if data else frame(b"c"))
            sock.setblocking(False)
            stdin_open = bool(data)
        if lifeline is not None and lifeline in ready and not os.read(lifeline, 64):
            break       # the caller is gone: closing the channel kills the process
    sock.close()
    if not started:
        return mon.error("the guest agent closed the channel before the process started")
    mon.exited(*(status or (128 + signal.SIGKILL, signal.SIGKILL)))
    return 0


def main(argv: list[str]) -> int:
    mon = Monitor.begin(argv)
    cfg = mon.config
    return run_vm(mon, cfg) if cfg["mode"] == "vm" else run_exec(mon, cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
