"""Shared fixtures: a busybox rootfs built once, and a private state root per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The conformance fixtures are opt-in (no pytest11 entry point loads them into every
# pytest run of the environment): a driver's test suite names the plugin.
pytest_plugins = ["execdriver.testing.plugin"]

# The compiled front starts a server on first use and uses a running one: the suite's
# commands run in their own processes (a server one of them or the set-up started must
# not serve the rest), and tests that want a server start their own on a private socket
# with an environment of their own.
os.environ["EXECDRIVER_SERVER"] = "off"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-mostly busybox rootfs shared by the session (do not modify it)."""
    from execdriver.rootfs import build_busybox
    return build_busybox(tmp_path_factory.mktemp("rootfs") / "busybox")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A fresh busybox rootfs a test may modify."""
    from execdriver.rootfs import build_busybox
    return build_busybox(tmp_path / "rootfs")


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d
