"""Capability plans (pure) and /proc status parsing."""

from __future__ import annotations

import os

import pytest

from execdriver import spec
from execdriver.errors import StepFailed
from execdriver.kernel import capabilities as caps

CHOWN, KILL, SETPCAP = 0, 5, 8


def test_mask_names_roundtrip() -> None:
    assert caps.names_to_mask(["CAP_CHOWN", "kill"]) == (1 << CHOWN) | (1 << KILL)
    assert caps.mask_to_names((1 << CHOWN) | (1 << KILL)) == ["CAP_CHOWN", "CAP_KILL"]
    assert caps.mask_to_names(0) == []
    full = (1 << len(spec.CAPABILITIES)) - 1
    assert caps.mask_to_names(full) == list(spec.CAPABILITIES)
    assert caps.mask_to_names(1 << 45) == ["CAP_45"]


def test_prepare_default_caps() -> None:
    plan = caps.prepare(spec.Capabilities(), kernel_last_cap=40)
    want = caps.names_to_mask(spec.DEFAULT_CAPABILITIES)
    assert plan.bounding == plan.effective == plan.permitted == want
    assert plan.inheritable == plan.ambient == 0
    assert plan.last_cap == 40
    assert set(plan.drop_bounding) == {n for n in range(41) if not want >> n & 1}
    assert plan.raise_ambient == ()
    # the capset structs carry the low and high 32-bit halves
    assert plan._header.version == 0x20080522 and plan._header.pid == 0
    assert plan._data[0].effective == want & 0xFFFFFFFF
    assert plan._data[1].permitted == want >> 32


def test_prepare_high_caps_and_ambient() -> None:
    c = spec.Capabilities(bounding=["CAP_KILL", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"],
                          permitted=["CAP_KILL", "CAP_BPF"], effective=["CAP_BPF"],
                          inheritable=["CAP_KILL", "CAP_BPF"], ambient=["CAP_BPF"])
    plan = caps.prepare(c, kernel_last_cap=40)
    bpf = spec.CAP_NUMBERS["CAP_BPF"]  # 39: lives in the second capset word
    assert plan._data[1].effective == 1 << (bpf - 32) and plan._data[0].effective == 0
    assert plan._data[0].permitted == 1 << KILL
    assert plan.raise_ambient == (bpf,)
    assert 40 not in plan.drop_bounding and bpf not in plan.drop_bounding


def test_caps_unknown_to_the_kernel_are_left_out() -> None:
    c = spec.Capabilities(bounding=["CAP_KILL", "CAP_CHECKPOINT_RESTORE"],
                          permitted=["CAP_KILL", "CAP_CHECKPOINT_RESTORE"],
                          effective=["CAP_KILL"])
    plan = caps.prepare(c, kernel_last_cap=39)   # an older kernel without cap 40
    assert plan.bounding == plan.permitted == 1 << KILL
    assert max(plan.drop_bounding) == 39


def test_inheritable_outside_bounding_is_refused() -> None:
    c = spec.Capabilities(bounding=["CAP_CHOWN"], permitted=["CAP_KILL"], effective=[],
                          inheritable=["CAP_KILL"])
    with pytest.raises(StepFailed, match="CAP_KILL") as err:
        caps.prepare(c)
    assert err.value.step == "capabilities"


def test_last_cap_matches_kernel() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())


def test_read_status_caps() -> None:
    got = caps.read_status_caps()
    assert set(got) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    assert got == caps.read_status_caps(os.getpid())
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("CapBnd:"))
    assert got["CapBnd"] == int(line.split()[1], 16)
    if os.geteuid() == 0:
        assert got["CapEff"] >> SETPCAP & 1


def test_a_plan_survives_pickling_with_its_capset_structs() -> None:
    """The fork server gets the plan pickled: the C structs are rebuilt, not lost."""
    import ctypes
    import pickle
    c = spec.Capabilities(bounding=["CAP_KILL", "CAP_BPF"], permitted=["CAP_KILL", "CAP_BPF"],
                          effective=["CAP_BPF"], inheritable=["CAP_KILL"], ambient=["CAP_KILL"])
    plan = caps.prepare(c, kernel_last_cap=40)
    copy = pickle.loads(pickle.dumps(plan))  # noqa: S301 - our own bytes
    assert copy == plan
    assert ctypes.string_at(ctypes.addressof(copy._data), ctypes.sizeof(copy._data)) == \
        ctypes.string_at(ctypes.addressof(plan._data), ctypes.sizeof(plan._data))
    assert (copy._header.version, copy._header.pid) == (0x20080522, 0)
    assert copy._data[1].effective == 1 << (spec.CAP_NUMBERS["CAP_BPF"] - 32)
