"""The asyncio API: any driver's verbs, awaitable, never blocking the event loop.

::

    import execdriver, execdriver.aio

    driver = execdriver.aio.AsyncDriver(execdriver.load_driver("native"))
    status = await driver.run("job1", spec)
    async with driver.started("web1", spec, detach=True) as handle:
        await handle.wait()

Each blocking call runs in the loop's default executor (a container's lifetime
is the process's, not the worker thread's). Cancellation never leaves a
container behind: a ``run`` or ``started`` block that is cancelled terminates
its container, and a ``start`` cancelled while the container was being created
terminates it as soon as the creation is over.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .driver import ContainerInfo, ExecDriver, ExecResult, ExitStatus, Handle, Stats, Stdio
    from .spec import Process, Spec

T = TypeVar("T")
log = logging.getLogger("execdriver")


async def _settled(fut: asyncio.Future[Any]) -> bool:
    """Wait for ``fut`` whatever cancellations come meanwhile (the caller re-raises
    its own); did it succeed?"""
    while not fut.done():
        try:
            await asyncio.wait({fut})   # (a cancelled wait leaves ``fut`` alone)
        except asyncio.CancelledError:
            continue
    return not fut.cancelled() and fut.exception() is None


class AsyncHandle:
    """A started container (or exec'd process) to await."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    @property
    def id(self) -> str:
        return self.handle.id

    @property
    def pid(self) -> int:
        return self.handle.pid

    @property
    def pty_master(self) -> int | None:
        return self.handle.pty_master

    async def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The exit status; None when ``timeout`` expired first (ExitStatusLost if it
        was never recorded). Cancelling the wait leaves the process alone."""
        if timeout is None:
            return await self.handle.wait_async()
        try:
            return await asyncio.wait_for(self.handle.wait_async(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.handle.close()


class AsyncDriver:
    """``driver``'s verbs as coroutines."""

    def __init__(self, driver: ExecDriver) -> None:
        self.driver = driver

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))

    # -- starting -----------------------------------------------------------------------
    async def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
                    detach: bool = False) -> AsyncHandle:
        """Create and start; cancelled meanwhile, the container is terminated once its
        creation is over (it is never left running for nobody)."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, functools.partial(
            self.driver.start, container_id, spec, stdio=stdio, detach=detach))
        try:
            handle = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The undo finishes before the cancellation goes on: whoever cancelled
            # finds no container left.
            if await _settled(fut):
                fut.result().close()
                ended = loop.run_in_executor(None, self._terminate_and_reap, fut.result(),
                                             detach)
                if not await _settled(ended):
                    log.warning("%s: a cancelled start could not terminate it: %s",
                                container_id, ended.exception())
            raise
        return AsyncHandle(handle)

    async def run(self, container_id: str, spec: Spec, *,
                  stdio: Stdio | None = None) -> ExitStatus:
        """Run in the foreground and remove the container; cancelled, it is
        terminated (and removed) before the cancellation goes on."""
        async with self.started(container_id, spec, stdio=stdio) as handle:
            status = await handle.wait()
        assert status is not None       # (a wait without timeout returns or raises)
        return status

    @contextlib.asynccontextmanager
    async def started(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
                      detach: bool = False) -> AsyncIterator[AsyncHandle]:
        """``start`` as an async context manager: the container is terminated (and a
        pty master closed) however the block ends, cancellation included."""
        handle = await self.start(container_id, spec, stdio=stdio, detach=detach)
        try:
            yield handle
        finally:
            handle.close()
            # Shielded: a cancelled block still waits for its container to be gone (and,
            # in the foreground, for its monitor to be reaped: no zombie left behind).
            ended = asyncio.ensure_future(
                self._call(self._terminate_and_reap, handle.handle, detach))
            await _settled(ended)
            ended.result()              # a failed terminate is the caller's to see

    def _terminate_and_reap(self, handle: Handle, detach: bool) -> None:
        from .errors import ExecDriverError
        self.driver.terminate(handle.id)
        if not detach:
            try:
                handle.wait(10)
            except ExecDriverError:
                pass

    # -- the other verbs -------------------------------------------------------------------
    async def kill(self, container_id: str, signal: int | str = 15, all: bool = False) -> None:
        await self._call(self.driver.kill, container_id, signal, all=all)

    async def pause(self, container_id: str) -> None:
        await self._call(self.driver.pause, container_id)

    async def unpause(self, container_id: str) -> None:
        await self._call(self.driver.unpause, container_id)

    async def info(self, container_id: str) -> ContainerInfo:
        return await self._call(self.driver.info, container_id)

    async def list(self) -> builtins.list[ContainerInfo]:
        return await self._call(self.driver.list)

    async def stats(self, container_id: str) -> Stats:
        return await self._call(self.driver.stats, container_id)

    async def pids(self, container_id: str) -> builtins.list[int]:
        return await self._call(self.driver.pids, container_id)

    async def logs(self, container_id: str) -> bytes:
        return await self._call(self.driver.logs, container_id)

    async def terminate(self, container_id: str) -> None:
        await asyncio.shield(self._call(self.driver.terminate, container_id))

    async def wait(self, container_id: str, timeout: float | None = None) -> ExitStatus | None:
        handle = await self._call(self.driver.handle, container_id)
        return await AsyncHandle(handle).wait(timeout)

    async def exec(self, container_id: str, process: Process, *,
                   stdio: Stdio | None = None) -> ExitStatus:
        """Run ``process`` in the container until it ends; cancelled, it is killed."""
        from .driver import refuse_terminal
        refuse_terminal(container_id, process)
        started = await self.exec_start(container_id, process, stdio=stdio, detach=False)
        try:
            status = await started.wait()
        except BaseException:
            await asyncio.shield(self._call(started.handle.kill_and_reap))
            raise
        assert status is not None       # (a wait without timeout returns or raises)
        return status

    async def exec_start(self, container_id: str, process: Process, *,
                         stdio: Stdio | None = None, detach: bool = True) -> AsyncHandle:
        return AsyncHandle(await self._call(self.driver.exec_start, container_id, process,
                                            stdio=stdio, detach=detach))

    async def exec_capture(self, container_id: str, command: builtins.list[str] | Process, *,
                           input: bytes | None = None,
                           timeout: float | None = None) -> ExecResult:
        return await self._call(self.driver.exec_capture, container_id, command, input=input,
                                timeout=timeout)
