"""The generated syscall table, checked against the headers and libseccomp."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from execdriver.kernel import syscall_table, syscalls

REPO = Path(__file__).resolve().parents[2]
HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def test_running_arch_table() -> None:
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    assert arch == syscall_table.ARCH
    assert syscall_table.SYSCALLS is syscall_table.TABLES[arch]
    assert {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[arch] == syscall_table.AUDIT_ARCH
    assert syscall_table.MAX_KNOWN == max(syscall_table.SYSCALLS.values()) >= 470


def test_well_known_numbers() -> None:
    x86, arm = syscall_table.X86_64, syscall_table.AARCH64
    assert (x86["read"], x86["write"], x86["clone"], x86["keyctl"], x86["seccomp"]) == \
        (0, 1, 56, 250, 317)
    assert (arm["read"], arm["write"], arm["clone"], arm["keyctl"], arm["seccomp"]) == \
        (63, 64, 220, 219, 277)
    assert x86["clone3"] == arm["clone3"] == 435
    assert x86["listns"] == arm["listns"] == 470
    assert "open" not in arm and "fstat" in arm and "newfstatat" in arm
    # numbers are unique per arch
    for table in (x86, arm):
        assert len(set(table.values())) == len(table)


def test_the_syscall_layer_uses_the_table() -> None:
    assert syscalls.NR is syscall_table.SYSCALLS
    # the numbers the syscall layer calls by hand, on both architectures
    for name in ("pivot_root", "seccomp", "openat2", "close_range", "capset", "bpf"):
        assert name in syscall_table.X86_64 and name in syscall_table.AARCH64


def test_an_unknown_architecture_is_refused() -> None:
    from execdriver.errors import UnsupportedHost
    assert syscall_table.arch_of("x86_64") == "x86_64"
    assert syscall_table.arch_of("arm64") == "aarch64"
    with pytest.raises(UnsupportedHost, match="architecture riscv64: no syscall table"):
        syscall_table.arch_of("riscv64")


def test_other_abi_names_are_not_ours() -> None:
    assert {"chown32", "_llseek", "socketcall", "mmap2"} <= syscall_table.OTHER_ABI_NAMES
    assert not syscall_table.OTHER_ABI_NAMES & set(syscall_table.X86_64)
    assert not syscall_table.OTHER_ABI_NAMES & set(syscall_table.AARCH64)


@pytest.mark.skipif(not HEADER.exists() or not shutil.which("cpp"), reason="kernel headers/cpp")
def test_generated_file_is_up_to_date() -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts/gen_syscall_table.py"), "--check"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def _libseccomp() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("seccomp")
    if not path:
        return None
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    return lib


@pytest.mark.skipif(_libseccomp() is None, reason="libseccomp not installed")
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_agrees_with_libseccomp(arch: str) -> None:
    """An independent table: every name libseccomp knows has our number, and back."""
    lib = _libseccomp()
    token = syscall_table.AUDIT_ARCHES[arch]
    table = syscall_table.TABLES[arch]
    checked = 0
    for name, nr in table.items():
        theirs = lib.seccomp_syscall_resolve_name_arch(token, name.encode())
        if theirs >= 0:   # negative: a name this libseccomp does not know (newer) or pseudo
            assert theirs == nr, (arch, name)
            checked += 1
    assert checked > 280
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    resolved = 0
    for nr in range(460):
        ptr = lib.seccomp_syscall_resolve_num_arch(token, nr)
        if ptr:
            name = ctypes.string_at(ptr).decode()
            libc.free(ptr)
            assert table.get(name) == nr, (arch, nr, name)
            resolved += 1
    assert resolved == checked
