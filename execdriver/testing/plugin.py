"""pytest plugin with the conformance fixtures; opt-in: ``pytest_plugins =
["execdriver.testing.plugin"]`` in a conftest.py, or ``-p execdriver.testing.plugin``.

It imports nothing heavy at module level. Fixtures:

- ``conformance_rootfs`` (session): a busybox rootfs, built once; do not modify it.
- ``conformance_state_root``: a private, empty state root for one test.
- ``conformance_driver_name``: the class's ``driver_name`` (override for other layouts).
- ``conformance_driver``: the driver under test on that state root. Skips with
  the driver's own reason when it is unavailable here. Afterwards it terminates
  every container the test left and fails the test if any container process
  survives or anything but empty directories remains under the state root.
- ``conformance_spec``: ``make_spec`` bound to that driver and rootfs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from execdriver.driver import ExecDriver

# Detailed assertion messages inside the suite (pytest only rewrites test modules,
# and an editable install hides the package from its plugin-file rewriting).
pytest.register_assert_rewrite("execdriver.testing.conformance", "execdriver.testing.helpers")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: execdriver driver conformance suite")


@pytest.fixture(scope="session")
def conformance_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from execdriver.rootfs import build_busybox
    return build_busybox(tmp_path_factory.mktemp("conformance-rootfs") / "busybox")


@pytest.fixture
def conformance_state_root(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def conformance_driver_name(request: pytest.FixtureRequest) -> str:
    name = getattr(request.cls, "driver_name", "") if request.cls else ""
    if not name:
        pytest.fail("conformance: set driver_name on the test class "
                    "(or override the conformance_driver_name fixture)")
    return name


@pytest.fixture
def conformance_driver(request: pytest.FixtureRequest, conformance_driver_name: str,
                       conformance_state_root: Path) -> Iterator[ExecDriver]:
    from execdriver.errors import DriverUnavailable
    from execdriver.loader import load_driver

    make = getattr(request.cls, "make_driver", None) if request.cls else None
    try:
        if make is not None:
            driver = make(conformance_state_root)
        else:
            driver = load_driver(conformance_driver_name, state_root=conformance_state_root)
    except DriverUnavailable as exc:
        pytest.skip(str(exc))
    avail = type(driver).availability()
    if not avail.available:
        pytest.skip(f"driver {driver.name}: not available on this host: {avail.reason}")
    yield driver
    allowed = getattr(request.cls, "state_root_allowed_files", ()) if request.cls else ()
    problems = clean_up(driver, conformance_state_root, allowed)
    if problems:
        pytest.fail("conformance: left behind after the test:\n  " + "\n  ".join(problems),
                    pytrace=False)


def clean_up(driver: ExecDriver, state_root: Path, allowed: Any = ()) -> list[str]:
    """Terminate every container under ``state_root``; what could not be cleaned."""
    from execdriver.errors import ContainerNotFound
    from execdriver.testing.helpers import alive, leftovers

    problems = []
    pids = []
    for cid in driver.state.ids():
        with contextlib.suppress(Exception):
            pid = driver.info(cid).pid
            if pid:
                pids.append(pid)
        try:
            driver.terminate(cid)
        except ContainerNotFound:
            pass
        except Exception as exc:  # noqa: BLE001 - report every failure, keep cleaning
            problems.append(f"terminate {cid}: {type(exc).__name__}: {exc}")
    deadline = time.monotonic() + 10
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    problems += [f"container process {p} still running after terminate" for p in alive(pids)]
    problems += [f"{state_root}/{rel}" for rel in leftovers(state_root, allowed)]
    return problems


@pytest.fixture
def conformance_spec(conformance_driver: ExecDriver,
                     conformance_rootfs: Path) -> Callable[..., Any]:
    """``make(args, env=..., cwd=..., user=..., hostname=...)`` -> Spec for the driver."""
    from execdriver.testing.helpers import make_spec

    def make(args: list[str], **tweaks: Any) -> Any:
        return make_spec(conformance_driver, conformance_rootfs, args, **tweaks)
    return make
