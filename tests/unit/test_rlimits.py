"""Rlimit preparation: names, unlimited, and the clear error for an unraisable limit."""

from __future__ import annotations

import resource

import pytest

from execdriver import spec
from execdriver.errors import StepFailed
from execdriver.kernel import rlimits
from execdriver.kernel.capabilities import has_effective


def has_cap_sys_resource() -> bool:
    return has_effective("CAP_SYS_RESOURCE")


def test_names_map_to_resource_constants() -> None:
    assert set(rlimits.RLIMITS) == set(spec.RLIMIT_NAMES)
    assert rlimits.RLIMITS["nofile"] == resource.RLIMIT_NOFILE
    assert rlimits.RLIMITS["as"] == resource.RLIMIT_AS
    assert rlimits.RLIMITS["locks"] == 10 and rlimits.RLIMITS["rttime"] == 15
    for name, nr in rlimits.RLIMITS.items():
        const = getattr(resource, "RLIMIT_" + name.upper(), None)
        assert const in (None, nr), name
        resource.getrlimit(nr)  # a valid resource number for the kernel


def test_prepare_lowering_and_unlimited() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = min(hard, 1024) if hard != resource.RLIM_INFINITY else 1024
    got = rlimits.prepare([spec.Rlimit(type="RLIMIT_NOFILE", soft=64, hard=low),
                           spec.Rlimit(type="core", soft=0, hard=0)])
    assert got == [(resource.RLIMIT_NOFILE, 64, low), (resource.RLIMIT_CORE, 0, 0)]
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == resource.RLIM_INFINITY:
        got = rlimits.prepare([spec.Rlimit(type="core", soft=2**64 - 1, hard=2**64 - 1)])
        assert got == [(resource.RLIMIT_CORE, resource.RLIM_INFINITY, resource.RLIM_INFINITY)]


def test_raising_above_hard_is_a_clear_error() -> None:
    if has_cap_sys_resource():
        pytest.skip("this process may raise hard limits (CAP_SYS_RESOURCE)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("nofile hard limit is unlimited")
    with pytest.raises(StepFailed) as err:
        rlimits.prepare([spec.Rlimit(type="nofile", soft=10, hard=hard + 1)])
    msg = str(err.value)
    assert msg.startswith(f"rlimit type=nofile hard={hard + 1}:")
    assert f"current hard limit {hard}" in msg and "CAP_SYS_RESOURCE" in msg
    assert err.value.step == "rlimit"
    assert err.value.context == {"type": "nofile", "hard": str(hard + 1)}


def test_nofile_above_nr_open_is_refused() -> None:
    with open("/proc/sys/fs/nr_open") as f:
        nr_open = int(f.read())
    with pytest.raises(StepFailed, match=f"above fs.nr_open \\({nr_open}\\)"):
        rlimits.prepare([spec.Rlimit(type="nofile", soft=1, hard=nr_open + 1)])


def test_above_compares_unlimited_as_largest() -> None:
    inf = resource.RLIM_INFINITY
    assert rlimits._above(inf, 5) and not rlimits._above(5, inf)
    assert not rlimits._above(inf, inf) and rlimits._above(6, 5) and not rlimits._above(5, 5)
