"""Device access on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, built in Python.

cgroup v2 has no devices controller; the kernel instead runs BPF programs attached
to the cgroup on every open/mknod of a device node. :func:`build_program` turns the
rule list (via the v1 emulator, so both versions agree) into BPF instructions;
:func:`attach_device_filter` loads it with bpf(BPF_PROG_LOAD) and attaches it with
BPF_F_ALLOW_MULTI, then detaches the programs that were there before (an update).
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Sequence

from ...config import DeviceRule
from ...errors import StepFailed
from .. import syscalls
from .devices import DeviceEmulator

# --- the program ------------------------------------------------------------

# struct bpf_cgroup_dev_ctx { u32 access_type /* (access << 16) | type */; u32 major; u32 minor; }
DEV_TYPE = {"b": 1, "c": 2}                     # BPF_DEVCG_DEV_BLOCK / _CHAR
ACC_BITS = {"m": 1, "r": 2, "w": 4}             # BPF_DEVCG_ACC_MKNOD / _READ / _WRITE

# opcodes (class | op | source)
LDX_MEM_W = 0x61        # dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54
ALU32_RSH_K = 0x74
ALU32_MOV_X = 0xBC
ALU64_MOV_K = 0xB7
JMP_JEQ_K = 0x15
JMP_JNE_K = 0x55
JMP_EXIT = 0x95

Insn = tuple[int, int, int, int, int]           # (opcode, dst, src, off, imm)


def access_mask(access: str) -> int:
    return sum(bit for c, bit in ACC_BITS.items() if c in access)


def build_program(rules: Sequence[DeviceRule]) -> list[Insn]:
    """Instructions returning 1 (allow) or 0 (deny) exactly as v1 would decide."""
    emu = DeviceEmulator.from_rules(rules)
    prog: list[Insn] = [
        (LDX_MEM_W, 2, 1, 0, 0), (ALU32_AND_K, 2, 0, 0, 0xFFFF),   # r2 = device type
        (LDX_MEM_W, 3, 1, 0, 0), (ALU32_RSH_K, 3, 0, 0, 16),       # r3 = access asked
        (LDX_MEM_W, 4, 1, 4, 0),                                    # r4 = major
        (LDX_MEM_W, 5, 1, 8, 0),                                    # r5 = minor
    ]
    hit = 0 if emu.default_allow else 1     # what a matching exception decides
    for ex in emu.exceptions():
        acc = access_mask(ex.access)
        # each check jumps to the end of this block when the exception does not apply
        checks: list[tuple[int, int, int]] = [(JMP_JNE_K, 2, DEV_TYPE[ex.type])]
        if emu.default_allow and acc != 7:
            checks += [(ALU32_MOV_X, 1, 3), (ALU32_AND_K, 1, acc), (JMP_JEQ_K, 1, 0)]
        elif not emu.default_allow and acc != 7:
            checks += [(ALU32_MOV_X, 1, 3), (ALU32_AND_K, 1, ~acc & 0xFFFF), (JMP_JNE_K, 1, 0)]
        if ex.major is not None:
            checks.append((JMP_JNE_K, 4, ex.major))
        if ex.minor is not None:
            checks.append((JMP_JNE_K, 5, ex.minor))
        n = len(checks) + 2
        for i, (op, dst, imm) in enumerate(checks):
            if op == ALU32_MOV_X:
                prog.append((op, dst, imm, 0, 0))
            elif op in (JMP_JEQ_K, JMP_JNE_K):
                prog.append((op, dst, 0, n - i - 1, imm))
            else:
                prog.append((op, dst, 0, 0, imm))
        prog += [(ALU64_MOV_K, 0, 0, 0, hit), (JMP_EXIT, 0, 0, 0, 0)]
    prog += [(ALU64_MOV_K, 0, 0, 0, 1 if emu.default_allow else 0), (JMP_EXIT, 0, 0, 0, 0)]
    return prog


def encode(prog: list[Insn]) -> bytes:
    """struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm; } (little endian)."""
    return b"".join(struct.pack("<BBhi", op, (src << 4) | dst, off,
                                imm - (1 << 32) if imm >= 1 << 31 else imm)
                    for op, dst, src, off, imm in prog)


# --- the bpf() syscall --------------------------------------------------------

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 13, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_ATTR_SIZE = 144        # >= every field we use; the kernel wants the unused tail zeroed


def bpf(cmd: int, attr: bytes | bytearray, path: str | None = None) -> int:
    nr = syscalls.NR["bpf"]
    buf = ctypes.create_string_buffer(bytes(attr).ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    while True:
        res = syscalls.libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf,
                                    ctypes.c_uint(_ATTR_SIZE))
        if res != -1:
            if isinstance(attr, bytearray):
                attr[:] = buf.raw[:len(attr)]
            return res
        err = ctypes.get_errno()
        if err != 4:        # EINTR
            raise OSError(err, os.strerror(err), path)


def load_program(prog: list[Insn]) -> int:
    """BPF_PROG_LOAD; returns the program fd. Verifier output goes into the error."""
    code = ctypes.create_string_buffer(encode(prog))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(16384)

    def attr(log_level: int) -> bytes:
        return struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(prog),
                           ctypes.addressof(code), ctypes.addressof(lic), log_level,
                           len(log) if log_level else 0, ctypes.addressof(log) if log_level else 0,
                           0, 0, b"execdriver_dev", 0, BPF_CGROUP_DEVICE)
    try:
        return bpf(BPF_PROG_LOAD, attr(0))
    except OSError as exc:
        try:
            bpf(BPF_PROG_LOAD, attr(1))
        except OSError:
            pass
        verifier = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise StepFailed("cgroup bpf load", os.strerror(exc.errno or 0), errno=exc.errno,
                         insns=len(prog), verifier=" | ".join(verifier) or "-") from None


def query_programs(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached to the cgroup itself."""
    ids = (ctypes.c_uint32 * 64)()
    attr = bytearray(struct.pack("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                                 ctypes.addressof(ids), 64))
    bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:min(count, 64)])


def attach_device_filter(cgroup_dir: str, rules: Sequence[DeviceRule]) -> None:
    """Load the program for ``rules`` and make it the one device filter of ``cgroup_dir``."""
    prog_fd = load_program(build_program(rules))
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        os.close(prog_fd)
        raise StepFailed("cgroup bpf attach", os.strerror(exc.errno or 0), errno=exc.errno,
                         path=cgroup_dir) from None
    try:
        old = query_programs(dir_fd)
        bpf(BPF_PROG_ATTACH, struct.pack("<IIII", dir_fd, prog_fd, BPF_CGROUP_DEVICE,
                                         BPF_F_ALLOW_MULTI), path=cgroup_dir)
        # with ALLOW_MULTI every attached program must allow: drop the previous filters
        for prog_id in old:
            old_fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id))
            try:
                bpf(BPF_PROG_DETACH, struct.pack("<IIII", dir_fd, old_fd, BPF_CGROUP_DEVICE, 0),
                    path=cgroup_dir)
            finally:
                os.close(old_fd)
    except OSError as exc:
        raise StepFailed("cgroup bpf attach", os.strerror(exc.errno or 0), errno=exc.errno,
                         path=cgroup_dir) from None
    finally:
        os.close(dir_fd)
        os.close(prog_fd)
