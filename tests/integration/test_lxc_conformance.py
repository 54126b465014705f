"""The driver conformance suite against the LXC driver."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from execdriver.testing.conformance import DriverConformance


class TestLXCConformance(DriverConformance):
    driver_name = "lxc"
    #: liblxc always sets container=lxc in the init's environment
    allowed_extra_env = frozenset({"PATH", "HOME", "container"})

    @pytest.fixture
    def conformance_state_root(self, tmp_path: Path) -> Iterator[Path]:
        """The plugin's state root, and afterwards (once every container is terminated) the
        empty lock directory liblxc keeps for it under /run/lxc/lock."""
        from execdriver_lxc import host
        d = tmp_path / "state"
        d.mkdir()
        yield d
        host.remove_lock_dir(str(d), levels=1)
