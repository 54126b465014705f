"""Forks whose parent-death signal follows the process, not the calling thread.

A foreground container's stage-1 and a non-detached exec helper arm
PR_SET_PDEATHSIG, so that they die with their caller. The kernel sends that
signal when the *thread* that forked them exits: a container started from a
short-lived thread (a thread pool's worker, asyncio's to_thread) would be killed
as soon as that thread returned. So forks from any thread but the main one are
made by one long-lived daemon thread of this module, which ends only with the
process. (The main thread lives until the interpreter exits.)
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[tuple[bool, Any]]]] | None = None
_owner_pid = 0


def _serve(jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[tuple[bool, Any]]]]) -> None:
    while True:
        job, reply = jobs.get()
        try:
            reply.put((True, job()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            reply.put((False, exc))


def _queue() -> queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[tuple[bool, Any]]]]:
    global _jobs, _owner_pid
    with _lock:
        # A forked copy of this process has no such thread: it starts its own.
        if _jobs is None or _owner_pid != os.getpid():
            _jobs = queue.SimpleQueue()
            _owner_pid = os.getpid()
            threading.Thread(target=_serve, args=(_jobs,), name="execdriver-forker",
                             daemon=True).start()
        return _jobs


def call(job: Callable[[], T]) -> T:
    """Run ``job`` (which forks) in a thread that lives as long as the process."""
    if threading.current_thread() is threading.main_thread():
        return job()
    reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    _queue().put((job, reply))
    ok, value = reply.get()
    if not ok:
        raise value
    return value
