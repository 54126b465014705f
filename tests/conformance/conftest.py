"""Marks the native conformance tests the VM lane runs (test_builtin_drivers.IN_THE_VM)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from test_builtin_drivers import IN_THE_VM
    for item in items:
        if "TestNativeConformance" in item.nodeid and item.name in IN_THE_VM:
            item.add_marker(pytest.mark.vm)
