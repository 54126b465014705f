"""execdriver.host: the host helpers a driver may use instead of the kernel layer."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

from execdriver import host


def test_every_public_name_is_the_kernel_layers_object() -> None:
    assert sorted(host.__all__) == sorted(host._EXPORTS) == dir(host)
    for name, (module, attr) in host._EXPORTS.items():
        kernel = importlib.import_module(f"execdriver.kernel.{module}")
        ours, theirs = getattr(host, name), getattr(kernel, attr)
        # (by name, not identity: another test may have reloaded a kernel module)
        if callable(theirs):
            assert (ours.__module__, ours.__qualname__) == (theirs.__module__, theirs.__qualname__)
        else:
            assert ours == theirs, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'mount'"):
        host.mount  # noqa: B018   (the kernel has one; the host API does not offer it)
    with pytest.raises(ImportError):
        from execdriver.host import pivot_root  # type: ignore[attr-defined]  # noqa: F401


def test_a_name_imports_only_its_own_module() -> None:
    code = ("import sys; from execdriver.host import read_procs; "
            "print(sorted(m for m in sys.modules if m.startswith('execdriver.kernel')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout)
    assert "execdriver.kernel.cgroups" in loaded
    assert not {"execdriver.kernel.mounts", "execdriver.kernel.seccomp_default",
                "execdriver.kernel.syscall_table"} & set(loaded), loaded
