"""execdriver.aio under a real event loop (issue #16): concurrent containers, a loop that
keeps running, and cancellation that never leaves a container behind (root)."""

from __future__ import annotations

import asyncio
import time

import helpers_native
import pytest
from helpers_native import Box, proc_state

from execdriver.aio import AsyncDriver
from execdriver.driver import ExitStatus, Status
from execdriver.errors import ContainerNotFound
from execdriver.state import StateStore

anybox = helpers_native.anybox
native = helpers_native.native

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def new_id(box: Box, tag: str) -> str:
    cid = helpers_native.new_id(tag)
    box.ids.append(cid)
    return cid


def gone(box: Box, cid: str) -> bool:
    try:
        box.driver.info(cid)
    except ContainerNotFound:
        return True
    return False


def test_concurrent_runs_and_the_loop_keeps_running(anybox: Box) -> None:
    d = AsyncDriver(anybox.driver)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> list[ExitStatus]:
        t = asyncio.create_task(ticker())
        try:
            return await asyncio.gather(*[
                d.run(new_id(anybox, f"aio{i}"), anybox.spec(f"sleep 0.3; exit {i}"))
                for i in range(4)])
        finally:
            t.cancel()
    t0 = time.monotonic()
    statuses = asyncio.run(main())
    elapsed = time.monotonic() - t0
    assert statuses == [ExitStatus(i) for i in range(4)]
    # the loop ticked all along: at least a third of the 10 ms ticks the time allowed
    assert ticks >= elapsed / 0.01 / 3, (ticks, elapsed)


def test_a_cancelled_run_terminates_its_container(anybox: Box) -> None:
    d = AsyncDriver(anybox.driver)
    cid = new_id(anybox, "aioc")

    async def main() -> None:
        task = asyncio.create_task(d.run(cid, anybox.spec("sleep 30")))
        while True:
            await asyncio.sleep(0.02)
            try:
                if (await d.info(cid)).status == Status.RUNNING:
                    break
            except ContainerNotFound:
                continue
        monitor = StateStore(anybox.state_root).read(cid).monitor_pid
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(anybox, cid)            # removed before the cancellation went on
        assert monitor and proc_state(monitor) is None, "the monitor was left a zombie"
    asyncio.run(main())


def test_a_start_cancelled_while_creating_leaves_nothing(anybox: Box) -> None:
    d = AsyncDriver(anybox.driver)
    cid = new_id(anybox, "aios")

    async def main() -> None:
        task = asyncio.create_task(d.start(cid, anybox.spec("sleep 30"), detach=True))
        await asyncio.sleep(0)              # the creation is under way in a thread
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()                       # a second cancellation does not cut the undo short
        with pytest.raises(asyncio.CancelledError):
            await task
        # the creation ran to its end and the container was terminated before the
        # cancellation reached us: it never shows up afterwards
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert gone(anybox, cid), f"{cid} showed up after its start was cancelled"
            time.sleep(0.005)
    asyncio.run(main())


def test_started_block_and_waits(native: Box) -> None:
    d = AsyncDriver(native.driver)
    cid = new_id(native, "aiob")

    async def main() -> None:
        with pytest.raises(RuntimeError):
            async with d.started(cid, native.spec("sleep 30"), detach=True) as handle:
                assert await handle.wait(0.05) is None          # a timeout, not a status
                assert await d.wait(cid, 0.05) is None
                assert (await d.exec_capture(cid, ["echo", "hi"])).stdout == b"hi\n"
                raise RuntimeError("the block failed")
        assert gone(native, cid)
        status = await handle.wait(10)
        assert status is not None and status.signal == 9
    asyncio.run(main())
