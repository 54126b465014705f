"""Measure the proposed CLI shape: a thin client in front of a resident execdriver.

``python -m bench.proto.thin_client [-n 20]`` starts a server (the embedded
API, driver and spec loaded once) on a unix socket in a private workspace,
then times, interleaved with ``runc run``, a cold ``python -I -S`` client
process that passes its stdio fds over the socket, has the server run the
container with them, and exits with the container's code -- what
``execdriver run`` would cost if it talked to a resident service instead of
importing pydantic and the spec models (~230 ms) in every process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.workspace import Workspace, spec_dict

# The client: stdlib only, no site: what a thin `execdriver run` would import.
CLIENT = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
socket.send_fds(s, [json.dumps({"id": sys.argv[2], "args": sys.argv[3:]}).encode()], [0, 1, 2])
sys.exit(json.loads(s.recv(4096))["exit"])
"""


def serve(path: str, state_root: str, rootfs: str) -> None:
    from execdriver import Stdio, load_driver, validate_spec
    d = load_driver("native", state_root=state_root)
    specs: dict[tuple[str, ...], object] = {}
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(path)
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
        with conn:
            data, fds, _f, _a = socket.recv_fds(conn, 65536, 3)
            if not data:
                break
            req = json.loads(data)
            key = tuple(req["args"])
            if key not in specs:
                specs[key] = validate_spec(spec_dict(rootfs, req["args"]))
            try:
                status = d.run(req["id"], specs[key], stdio=Stdio(*fds))
                code = status.exit_code
            except Exception:  # noqa: BLE001
                code = 125
            finally:
                for fd in fds:
                    os.close(fd)
            conn.send(json.dumps({"exit": code}).encode())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=20)
    args = p.parse_args()
    ws = Workspace.create()
    server = None
    try:
        rootfs = str(ws.build_rootfs())
        sock = str(ws.root / "execdriver.sock")
        client = ws.root / "client.py"
        client.write_text(CLIENT)
        repo = str(Path(__file__).resolve().parent.parent.parent)
        server = subprocess.Popen([sys.executable, "-c",
                                   ("import sys; from bench.proto.thin_client import serve; "
                                    "serve(*sys.argv[1:])"), sock, str(ws.path("state")), rootfs],
                                  cwd=repo, env=dict(os.environ, PYTHONPATH=repo))
        while not os.path.exists(sock):
            time.sleep(0.05)
        bundle = ws.runc_bundle("true", ["/bin/true"])
        runc_root = str(ws.path("runc-state"))
        ours: list[float] = []
        runc: list[float] = []
        for i in range(args.n + 2):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-I", "-S", str(client), sock, f"thin{i}", "/bin/true"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            t1 = time.perf_counter()
            subprocess.run(["runc", "--root", runc_root, "run", "-b", str(bundle), f"r{i}"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            t2 = time.perf_counter()
            if i >= 2:
                ours.append(t1 - t0)
                runc.append(t2 - t1)
        mo, mr = statistics.median(ours) * 1e3, statistics.median(runc) * 1e3
        print(f"thin client + resident server: {mo:.1f} ms (min {min(ours) * 1e3:.1f}); "
              f"runc run: {mr:.1f} ms (min {min(runc) * 1e3:.1f}); ratio {mo / mr:.2f}")
    finally:
        if server is not None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                    s.connect(str(ws.root / "execdriver.sock"))
                    s.send(b"")
            except OSError:
                pass
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        ws.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
