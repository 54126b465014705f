#!/usr/bin/env python3
"""Generate execdriver/kernel/syscall_table.py from the installed kernel headers.

x86_64 numbers come from <asm/unistd_64.h>; aarch64 uses the generic table
<asm-generic/unistd.h>, run through cpp with the __ARCH_WANT_* switches arm64
sets. Syscalls newer than the installed headers are added from NEWER (numbers
from the kernel's syscall tables; since 424 every architecture shares them).
Names of other ABIs (i386, x32, arm, ppc, s390, ...) are kept as names only,
so a profile written for many architectures (like Docker's) still compiles.

Usage: scripts/gen_syscall_table.py [--check] [OUTPUT]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

INCLUDE = Path("/usr/include")
X86_64_HEADER = INCLUDE / "x86_64-linux-gnu/asm/unistd_64.h"
I386_HEADER = INCLUDE / "x86_64-linux-gnu/asm/unistd_32.h"
X32_HEADER = INCLUDE / "x86_64-linux-gnu/asm/unistd_x32.h"
# arch/arm64/include/uapi/asm/unistd.h sets these before including the generic table.
ARM64_WANTS = ["RENAMEAT", "NEW_STAT", "SET_GET_RLIMIT", "TIME32_SYSCALLS", "SYS_CLONE3",
               "MEMFD_SECRET"]

_COMMON_NEWER = {
    "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453, "futex_wake": 454,
    "futex_wait": 455, "futex_requeue": 456, "statmount": 457, "listmount": 458,
    "lsm_get_self_attr": 459, "lsm_set_self_attr": 460, "lsm_list_modules": 461,
    "mseal": 462, "setxattrat": 463, "getxattrat": 464, "listxattrat": 465,
    "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469,
    "listns": 470,
}
NEWER = {
    "x86_64": {**_COMMON_NEWER, "uretprobe": 335, "uprobe": 336},
    "aarch64": dict(_COMMON_NEWER),
}

# Syscall names that exist only on architectures we do not run on.
OTHER_ABI_NAMES = {
    "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
    "set_tls", "usr26", "usr32", "swapcontext", "switch_endian", "subpage_prot", "spu_run",
    "spu_create", "sys_debug_setcontext", "multiplexer", "rtas", "s390_pci_mmio_read",
    "s390_pci_mmio_write", "s390_runtime_instr", "s390_guarded_storage", "s390_sthyi",
    "riscv_flush_icache", "riscv_hwprobe", "sysmips", "cachectl", "recv", "send",
    "socketcall", "ipc", "oldolduname", "olduname", "mmap2", "_llseek", "_newselect",
}

_DEFINE = re.compile(r"^#define\s+__NR_(\w+)\s+(\S+)")


def parse_defines(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := _DEFINE.match(line))}


def resolve(defines: dict[str, str], extra: dict[str, str]) -> dict[str, int]:
    """Turn ``__NR_x`` values (numbers or other macro names) into numbers."""
    out = {}
    for name, value in defines.items():
        seen = 0
        while not value.isdigit() and seen < 5:
            value = extra.get(value, defines.get(value.removeprefix("__NR_"), value))
            seen += 1
        if value.isdigit():
            out[name] = int(value)
    return out


def x86_64_table() -> dict[str, int]:
    return resolve(parse_defines(X86_64_HEADER.read_text()), {})


def aarch64_table() -> dict[str, int]:
    cmd = ["cpp", "-dM"] + [f"-D__ARCH_WANT_{w}" for w in ARM64_WANTS] + ["-"]
    text = subprocess.run(cmd, input="#include <asm-generic/unistd.h>\n", text=True,
                          capture_output=True, check=True).stdout
    macros = dict(re.findall(r"^#define\s+(\w+)\s+(\S+)$", text, re.MULTILINE))
    table = resolve(parse_defines(text), macros)
    for bogus in ("syscalls", "arch_specific_syscall"):
        table.pop(bogus, None)
    return table


def with_newer(table: dict[str, int], arch: str) -> dict[str, int]:
    for name, nr in NEWER[arch].items():
        if table.get(name, nr) != nr:
            raise SystemExit(f"{arch}: header says {name}={table[name]}, NEWER says {nr}")
        table[name] = nr
    by_nr: dict[int, str] = {}
    for name, nr in table.items():
        if nr in by_nr:
            raise SystemExit(f"{arch}: {by_nr[nr]} and {name} share number {nr}")
        by_nr[nr] = name
    return dict(sorted(table.items(), key=lambda kv: kv[1]))


def other_names(tables: list[dict[str, int]]) -> set[str]:
    names = set(OTHER_ABI_NAMES)
    for header in (I386_HEADER, X32_HEADER):
        names |= set(parse_defines(header.read_text()))
    return {n for n in names if not any(n in t for t in tables)}


def fmt_dict(name: str, table: dict[str, int]) -> str:
    items = [f'"{k}": {v},' for k, v in table.items()]
    lines, cur = [], "   "
    for item in items:
        if len(cur) + 1 + len(item) > 95:
            lines.append(cur)
            cur = "   "
        cur += " " + item
    lines.append(cur)
    return f"{name}: dict[str, int] = {{\n" + "\n".join(lines) + "\n}\n"


def fmt_names(name: str, names: set[str]) -> str:
    items = [f'"{n}",' for n in sorted(names)]
    lines, cur = [], "   "
    for item in items:
        if len(cur) + 1 + len(item) > 95:
            lines.append(cur)
            cur = "   "
        cur += " " + item
    lines.append(cur)
    return f"{name}: frozenset[str] = frozenset({{\n" + "\n".join(lines) + "\n})\n"


HEAD = '''"""Syscall numbers for x86_64 and aarch64 (generated; do not edit by hand).

Generated by scripts/gen_syscall_table.py from the kernel headers, plus the
syscalls newer than those headers (up to Linux 6.18). ``SYSCALLS`` is the table
of the running architecture; ``MAX_KNOWN`` its highest number, above which the
seccomp compiler answers ENOSYS. ``OTHER_ABI_NAMES`` are names of other ABIs
(i386, x32, arm, ppc, s390...) so that multi-arch profiles are not rejected.
"""

from __future__ import annotations

import os

from ..errors import UnsupportedHost

'''

TAIL = '''
TABLES = {"x86_64": X86_64, "aarch64": AARCH64}
AUDIT_ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
ALL_NAMES: frozenset[str] = frozenset(X86_64) | frozenset(AARCH64) | OTHER_ABI_NAMES



def arch_of(machine: str) -> str:
    """Our name of ``uname -m``'s architecture; UnsupportedHost for one without a table."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if arch not in TABLES:
        raise UnsupportedHost(f"architecture {machine}: no syscall table (supported: "
                              f"{', '.join(sorted(TABLES))})")
    return arch


# The one source of syscall numbers: seccomp filters and the syscall layer alike.
ARCH = arch_of(os.uname().machine)
SYSCALLS: dict[str, int] = TABLES[ARCH]
AUDIT_ARCH: int = AUDIT_ARCHES[ARCH]
MAX_KNOWN: int = max(SYSCALLS.values())
'''


def generate() -> str:
    x86, arm = with_newer(x86_64_table(), "x86_64"), with_newer(aarch64_table(), "aarch64")
    return (HEAD + fmt_dict("X86_64", x86) + "\n" + fmt_dict("AARCH64", arm) + "\n"
            + fmt_names("OTHER_ABI_NAMES", other_names([x86, arm])) + TAIL)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    out = Path(args[0]) if args else (
        Path(__file__).resolve().parent.parent / "execdriver/kernel/syscall_table.py")
    text = generate()
    if check:
        if out.read_text() != text:
            print(f"{out} is out of date; run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
