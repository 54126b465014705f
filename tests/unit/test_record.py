"""kernel/record.py: the stage-1 modules' dataclass stand-in, and the create's forker's
import budget it exists for."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from execdriver.kernel.record import field, record

REPO = Path(__file__).resolve().parents[2]


@record
class _Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    scratch: list[int] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.scratch.append(self.x)


def test_init_defaults_and_factories() -> None:
    a, b = _Point(1), _Point(1)
    assert (a.x, a.y, a.tags, a.scratch) == (1, 0, [], [1])
    a.tags.append("t")
    assert b.tags == []                 # a factory per instance, not one shared list
    assert _Point(1, 2, ["u"]).tags == ["u"]
    assert _Point(x=3, tags=["v"]).y == 0


def test_repr_and_eq_leave_out_what_the_field_says() -> None:
    a, b = _Point(1, 2), _Point(1, 2)
    b.scratch.append(99)
    assert a == b
    assert a != _Point(1, 3)
    assert repr(a) == "_Point(x=1, y=2, tags=[])"
    assert _Point.__hash__ is None      # compared by value and mutable, as a dataclass


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing required argument 'x'"),
    ((1, 2, [], [], 5), {}, "takes 4 positional arguments but 5 were given"),
    ((1,), {"x": 2}, "multiple values for argument 'x'"),
    ((1,), {"z": 2}, "unexpected keyword argument 'z'"),
])
def test_wrong_arguments_are_type_errors(args: tuple[object, ...], kwargs: dict[str, object],
                                         message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _Point(*args, **kwargs)


def test_records_pickle() -> None:
    from execdriver.kernel.mounts import MountPlan
    plan = MountPlan("/data", "tmpfs", None, 0, "size=1m", propagation=[1])
    again = pickle.loads(pickle.dumps(plan))  # noqa: S301 - our own bytes
    assert again == plan and again.propagation == [1]


def test_the_forkers_imports_stay_small() -> None:
    """What the create's forker imports (client.c: spawn_forker, then serve_forker and
    the stage-1 modules) is on a served create's critical path: no dataclasses (it
    imports inspect), no typing, no Config module, no pydantic, no launch/lifetime."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from execdriver.kernel.forkserver import serve_forker; "
            "from execdriver.kernel import init; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(REPO)],
                         capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(out.stdout))
    assert "execdriver.kernel.init" in loaded and "execdriver.kernel.initconfig" in loaded
    heavy = {"dataclasses", "inspect", "typing", "pydantic", "execdriver.config",
             "execdriver.kernel.launch", "execdriver.kernel.lifetime", "execdriver.spec"}
    assert loaded & heavy == set()
