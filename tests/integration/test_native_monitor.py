"""The container monitor: the compiled waiter when built, the Python one otherwise.
Both must reap the init and record its exit status for info()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execdriver.kernel import waiter

pytestmark = pytest.mark.root


@pytest.fixture(params=["compiled", "python"])
def monitor_kind(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "compiled":
        monkeypatch.setenv("EXECDRIVER_WAITER", waiter.build(str(tmp_path / "waiter")))
    else:
        monkeypatch.setenv("EXECDRIVER_WAITER", "")
    return request.param


def _smaps_private_kib(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def test_detached_exit_status_recorded(monitor_kind: str, state_root: Path, busybox_rootfs: Path) -> None:
    from execdriver.loader import load_driver
    d = load_driver("native", state_root=state_root)
    h = d.start("mon1", d.default_spec(str(busybox_rootfs), ["/bin/sleep", "100"]),
                detach=True)
    try:
        st = d.state.read("mon1")
        mon = st.monitor_pid
        exe = os.readlink(f"/proc/{mon}/exe")
        if monitor_kind == "compiled":
            assert exe.endswith("waiter")
            assert _smaps_private_kib(mon) < 1024, "the compiled monitor should keep < 1 MiB"
        else:
            assert "python" in exe
        d.kill("mon1", 9)
        status = h.wait(10)
        assert status is not None and status.signal == 9 and status.exit_code == 137
        assert d.info("mon1").exit_status == status
    finally:
        d.terminate("mon1")
    assert not (state_root / "mon1").exists()
