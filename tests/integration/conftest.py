"""Fixtures of the network tests: a scratch network namespace per test, and a check
that the host's own namespace was left alone (use it with pytest.mark.usefixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from netns_helpers import host_ours
from scratch_netns import ScratchNetns


@pytest.fixture(scope="module")
def host_netns_untouched() -> Any:
    before = host_ours()
    yield
    assert host_ours() == before == ([], "")


@pytest.fixture
def ns(state_root: Path) -> Any:
    with ScratchNetns() as scratch:
        yield scratch
        scratch.assert_clean(state_root)
