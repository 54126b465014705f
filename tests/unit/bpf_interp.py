"""A tiny classic-BPF interpreter for seccomp programs (test helper).

Written from the BPF spec, independently of the compiler, and strict: it
rejects out-of-range jumps, unknown opcodes, misaligned loads and programs
that can run off their end, so a test run on it checks the program's shape too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7

_CLASS = 0x07
LD, ALU, JMP, RET = 0x00, 0x04, 0x05, 0x06


@dataclass
class Insn:
    code: int
    jt: int
    jf: int
    k: int


def decode(prog: bytes) -> list[Insn]:
    assert len(prog) % 8 == 0 and prog, "program must be a non-empty multiple of 8 bytes"
    return [Insn(*struct.unpack_from("=HBBI", prog, i)) for i in range(0, len(prog), 8)]


def seccomp_data(nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = (),
                 ip: int = 0) -> bytes:
    full = list(args) + [0] * (6 - len(args))
    return struct.pack("=iIQ6Q", nr if nr < 2**31 else nr - 2**32, arch, ip,
                       *[a & 0xFFFFFFFFFFFFFFFF for a in full])


def check(insns: list[Insn]) -> None:
    """Static checks the kernel also makes: jumps in range, last insn returns."""
    n = len(insns)
    assert n <= 4096, f"{n} instructions"
    for pc, ins in enumerate(insns):
        cls = ins.code & _CLASS
        if cls == JMP:
            if ins.code == 0x05:
                assert pc + 1 + ins.k < n, f"ja out of range at {pc}"
            else:
                assert pc + 1 + ins.jt < n and pc + 1 + ins.jf < n, f"jump out of range at {pc}"
        elif cls == LD:
            assert ins.code == 0x20 and ins.k % 4 == 0 and ins.k < 64, f"bad load at {pc}"
    assert insns[-1].code & _CLASS == RET, "program does not end with a return"


def run(prog: bytes | list[Insn], data: bytes) -> tuple[int, int]:
    """Run the filter on one seccomp_data; return (result, instructions executed)."""
    insns = decode(prog) if isinstance(prog, bytes) else prog
    a = 0
    pc = steps = 0
    while True:
        ins = insns[pc]
        steps += 1
        op = ins.code
        if op == 0x20:                      # ld w abs
            a = struct.unpack_from("=I", data, ins.k)[0]
            pc += 1
        elif op == 0x54:                    # and k
            a &= ins.k
            pc += 1
        elif op == 0x05:                    # ja
            pc += 1 + ins.k
        elif op in (0x15, 0x25, 0x35, 0x45):
            cond = {0x15: a == ins.k, 0x25: a > ins.k, 0x35: a >= ins.k,
                    0x45: bool(a & ins.k)}[op]
            pc += 1 + (ins.jt if cond else ins.jf)
        elif op == 0x06:                    # ret k
            return ins.k, steps
        else:
            raise AssertionError(f"unsupported opcode {op:#x} at {pc}")
        assert pc < len(insns), "ran off the end"


# Decoded seccomp return values
def action(result: int) -> tuple[str, int]:
    kinds = {0x80000000: "kill_process", 0x00000000: "kill", 0x00030000: "trap",
             0x00050000: "errno", 0x7FF00000: "trace", 0x7FFC0000: "log", 0x7FFF0000: "allow"}
    return kinds[result & 0xFFFF0000], result & 0xFFFF
