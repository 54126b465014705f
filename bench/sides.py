"""The two things a case compares: one container run, timed, on either side."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class BenchError(Exception):
    """A run failed: the case is reported as failed with this message."""


class Worker:
    """The embedded-API process (bench.worker), kept for the whole bench."""

    def __init__(self) -> None:
        repo = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.worker"], cwd=repo, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)

    def call(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"bench worker exited (status {self.proc.poll()})")
        resp = json.loads(line)
        if "error" in resp:
            raise BenchError(resp["error"])
        return resp

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="quit")
            except (BenchError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_ids = itertools.count()


def new_id(tag: str) -> str:
    return f"edb-{tag}-{os.getpid()}-{next(_ids)}"


class Side:
    """One side of a case; ``once()`` runs one container and returns seconds."""

    label = ""

    def once(self) -> float:
        raise NotImplementedError


class WorkerRun(Side):
    """``driver.run`` inside the long-lived worker (timed there)."""

    def __init__(self, label: str, worker: Worker, driver: str, state_root: str, rootfs: str,
                 args: list[str]) -> None:
        self.label, self.worker, self.driver = label, worker, driver
        self.state_root, self.rootfs, self.args = state_root, rootfs, args

    def once(self) -> float:
        resp = self.worker.call(op="run", driver=self.driver, state_root=self.state_root,
                                rootfs=self.rootfs, args=self.args, id=new_id(self.driver))
        if resp["exit"] != 0:
            raise BenchError(f"{self.label}: container exited {resp['exit']}")
        return float(resp["seconds"])


class Command(Side):
    """A cold process per container; wall time from spawn to exit.

    ``argv(id)`` builds the command; ``prepare(id)`` and ``after(id)`` run
    untimed around it (writing a config file, removing leftovers).
    """

    def __init__(self, label: str, argv: Callable[[str], list[str]], *,
                 env: dict[str, str] | None = None,
                 prepare: Callable[[str], None] | None = None,
                 after: Callable[[str], None] | None = None, tag: str = "cmd") -> None:
        self.label, self.argv, self.env = label, argv, env
        self.prepare, self.after, self.tag = prepare, after, tag

    def once(self) -> float:
        cid = new_id(self.tag)
        if self.prepare:
            self.prepare(cid)
        argv = self.argv(cid)
        try:
            t0 = time.perf_counter()
            proc = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=self.env)
            dt = time.perf_counter() - t0
        finally:
            if self.after:
                self.after(cid)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise BenchError(f"{self.label}: exit {proc.returncode}: {err[-1] if err else ''}")
        return dt


def check_command(argv: list[str], env: dict[str, str] | None = None,
                  timeout: float = 60) -> str | None:
    """None if ``argv`` exits 0, else a one-line reason."""
    try:
        proc = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=env, timeout=timeout)
    except FileNotFoundError:
        return f"{argv[0]} not installed"
    except subprocess.TimeoutExpired:
        return f"{' '.join(argv[:2])} timed out"
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return f"{os.path.basename(argv[0])} exit {proc.returncode}: {lines[-1] if lines else ''}"[:200]
