"""Seccomp: a pure-Python classic-BPF compiler for spec profiles, and the installer.

``compile_filter`` runs in the parent and is cached per profile (compile once
per profile, not once per container). ``install`` runs in the forked container
init just before execve: one syscall, nothing imported. Installing needs
no_new_privs set first, or CAP_SYS_ADMIN: so install after setting
no_new_privs, or, when the spec turns no_new_privileges off, before the
capabilities are dropped (as runc does).

Program layout: check the audit arch (else KILL_PROCESS), load nr, reject x32
numbers (>= 0x40000000 but not -1, KILL_PROCESS), allow exit and exit_group
(below), then a binary search over intervals of
syscall numbers that share a decision; a leaf either returns or runs the
syscall's argument rules in order (first match wins, else the default action).
Numbers above the table's highest answer ERRNO(ENOSYS), so syscalls newer than
the table look unimplemented (like runc). Conditional jumps farther than 255
instructions are relaxed through BPF_JA trampolines, so any profile size works.
Arguments are compared as unsigned 64-bit values (little-endian words).

``exit`` and ``exit_group`` are always allowed, whatever the profile says: a
profile can never make a process unable to die (with exit_group denied, glibc's
``_exit`` falls through to a fault, and a process whose SIGSEGV handler was
inherited, faulthandler's say, spins forever instead of failing).

``silent_failure_risk`` says when a profile may leave the container's init
unable to report a failure between installing the filter and execve (no
execve or sendto, kill/trap actions, deny by default): the runtime then checks
how the init ended (launch.check_exec) instead of taking the closed sync
socket for a successful exec.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import struct

from . import syscall_table
from .record import field, record
from .syscalls import LIBC, Syscalls

TYPE_CHECKING = False   # (typing costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:
    from typing import Any

    from ..config import Seccomp, SeccompProfile

# BPF opcodes
LD_W_ABS, ALU_AND_K, RET_K = 0x20, 0x54, 0x06
JMP_JA, JMP_JEQ_K, JMP_JGT_K, JMP_JGE_K = 0x05, 0x15, 0x25, 0x35

# seccomp return values
RET_KILL_PROCESS, RET_KILL_THREAD, RET_TRAP = 0x80000000, 0x00000000, 0x00030000
RET_ERRNO, RET_TRACE, RET_LOG, RET_ALLOW = 0x00050000, 0x7FF00000, 0x7FFC0000, 0x7FFF0000
X32_SYSCALL_BIT = 0x40000000
MAX_INSNS = 4096
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16  # offsetof(struct seccomp_data, ...)
ALWAYS_ALLOWED = ("exit", "exit_group")   # a profile can never make a process unable to die


def action_value(action: str, errno: int | None, default_errno: int = _errno.EPERM) -> int:
    """The SECCOMP_RET_* value for a spec action (errno/trace carry a 16-bit datum)."""
    data = (default_errno if errno is None else errno) & 0xFFFF
    return {"allow": RET_ALLOW, "errno": RET_ERRNO | data, "kill": RET_KILL_THREAD,
            "kill_process": RET_KILL_PROCESS, "trap": RET_TRAP, "log": RET_LOG,
            "trace": RET_TRACE | (0 if errno is None else data)}[action]


# --- a tiny assembler with labels -------------------------------------------

@record
class _Op:
    code: int
    k: int = 0
    jt: str | None = None  # label names; None = the next instruction. BPF_JA: target in jt
    jf: str | None = None


@record
class _Asm:
    ops: list[_Op | str] = field(default_factory=list)  # str entries are labels
    n: int = 0

    def label(self) -> str:
        self.n += 1
        return f"L{self.n}"

    def put(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None) -> None:
        self.ops.append(_Op(code, k & 0xFFFFFFFF, jt, jf))

    def ret(self, value: int) -> None:
        self.put(RET_K, value)

    def mark(self, name: str) -> None:
        self.ops.append(name)

    def _positions(self) -> dict[str, int]:
        pos, where = 0, {}
        for op in self.ops:
            if isinstance(op, str):
                where[op] = pos
            else:
                pos += 1
        return where

    def assemble(self) -> bytes:
        where = self._positions()
        while self._relax(where):
            where = self._positions()
        out, pc = bytearray(), 0
        for op in self.ops:
            if isinstance(op, str):
                continue
            jt = where[op.jt] - pc - 1 if op.jt else 0
            jf = where[op.jf] - pc - 1 if op.jf else 0
            assert jt >= 0 and jf >= 0, "BPF jumps only forward"
            if op.code == JMP_JA:
                out += struct.pack("=HBBI", op.code, 0, 0, jt)
            else:
                out += struct.pack("=HBBI", op.code, jt, jf, op.k)
            pc += 1
        return bytes(out)

    def _relax(self, where: dict[str, int]) -> bool:
        """Give each conditional jump longer than 255 a BPF_JA trampoline after it."""
        new: list[_Op | str] = []
        pc, changed = 0, False
        for op in self.ops:
            new.append(op)
            if isinstance(op, str):
                continue
            tramps: list[_Op | str] = []
            for attr in ("jt", "jf"):
                target = getattr(op, attr)
                if op.code != JMP_JA and target and where[target] - pc - 1 > 255:
                    hop = self.label()
                    setattr(op, attr, hop)
                    tramps += [hop, _Op(JMP_JA, jt=target)]
            if tramps:
                changed = True
                skip = self.label()  # a fall-through (None) must now skip the trampolines
                op.jt = op.jt or skip
                op.jf = op.jf or skip
                new += [*tramps, skip]
            pc += 1
        self.ops = new
        return changed


# --- argument comparisons -----------------------------------------------------

def _emit_arg(a: _Asm, arg: tuple[int, int, int, str], fail: str) -> None:
    """Fall through when the 64-bit comparison holds, jump to ``fail`` when not."""
    index, value, value_two, op = arg
    lo_off = OFF_ARGS + 8 * index
    hi_off = lo_off + 4
    v_hi, v_lo = (value >> 32) & 0xFFFFFFFF, value & 0xFFFFFFFF
    ok = a.label()
    if op in ("eq", "ne", "masked_eq"):
        if op == "masked_eq":  # (arg & value) == value_two, as libseccomp
            m_hi, m_lo = v_hi, v_lo
            v_hi, v_lo = (value_two >> 32) & 0xFFFFFFFF, value_two & 0xFFFFFFFF
        yes, no = (ok, fail) if op != "ne" else (fail, ok)
        a.put(LD_W_ABS, hi_off)
        if op == "masked_eq":
            a.put(ALU_AND_K, m_hi)
        a.put(JMP_JEQ_K, v_hi, jf=no)
        a.put(LD_W_ABS, lo_off)
        if op == "masked_eq":
            a.put(ALU_AND_K, m_lo)
        a.put(JMP_JEQ_K, v_lo, jt=yes, jf=no)
    else:
        # hi words decide unless equal; then the lo words decide (unsigned).
        above, below = (ok, fail) if op in ("gt", "ge") else (fail, ok)
        a.put(LD_W_ABS, hi_off)
        a.put(JMP_JGT_K, v_hi, jt=above)
        a.put(JMP_JEQ_K, v_hi, jf=below)
        a.put(LD_W_ABS, lo_off)
        if op in ("gt", "le"):   # gt: lo > v; le: not (lo > v)
            a.put(JMP_JGT_K, v_lo, jt=above, jf=below)
        else:                        # ge: lo >= v; lt: not (lo >= v)
            a.put(JMP_JGE_K, v_lo, jt=above, jf=below)
    a.mark(ok)


# --- the program ----------------------------------------------------------------

# A syscall's handler: ((args, action value), ...) tried in order; empty args = unconditional.
Handler = tuple


def _handlers(profile: SeccompProfile, table: dict[str, int]) -> dict[int, Handler]:
    per_nr: dict[int, list[tuple[tuple, int]]] = {}
    for rule in profile.syscalls:
        value = action_value(rule.action, rule.errno)
        args = tuple((x.index, x.value, x.value_two, x.op) for x in rule.args)
        for name in rule.names:
            if name not in table:
                if name not in syscall_table.ALL_NAMES:
                    raise ValueError(f"seccomp: unknown syscall {name!r}")
                continue  # a syscall of another architecture: skipped, like runc
            chain = per_nr.setdefault(table[name], [])
            if not (chain and not chain[-1][0]):  # after an unconditional rule: dead
                chain.append((args, value))
    return {nr: tuple(chain) for nr, chain in per_nr.items()}


def _intervals(handlers: dict[int, Handler], default: Handler, max_nr: int) -> list:
    """[(first_nr, handler)] covering 0..2**32-1; equal neighbours merged."""
    out: list[tuple[int, Handler]] = []
    for nr in range(max_nr + 1):
        h = handlers.get(nr, default)
        if not out or out[-1][1] != h:
            out.append((nr, h))
    out.append((max_nr + 1, (((), RET_ERRNO | _errno.ENOSYS),)))
    return out


def _emit_handler(a: _Asm, handler: Handler, default_value: int) -> None:
    for args, value in handler:
        if not args:
            a.ret(value)
            return
        nxt = a.label()
        for arg in args:
            _emit_arg(a, arg, nxt)
        a.ret(value)
        a.mark(nxt)
    a.ret(default_value)


def _emit_tree(a: _Asm, ivs: list, default_value: int) -> None:
    if len(ivs) == 1:
        _emit_handler(a, ivs[0][1], default_value)
        return
    mid = len(ivs) // 2
    right = a.label()
    a.put(JMP_JGE_K, ivs[mid][0], jt=right)
    _emit_tree(a, ivs[:mid], default_value)
    a.mark(right)
    _emit_tree(a, ivs[mid:], default_value)


def compile_profile(profile: SeccompProfile, arch: str | None = None) -> bytes:
    """Compile a profile for ``arch`` (default: the running one) into BPF bytes."""
    return _compile_cached(plain(profile), arch or syscall_table.ARCH)


def plain(profile: Any) -> SeccompProfile:
    """``profile`` as Config data (a spec model is converted: callers may pass either)."""
    from ..config import SeccompProfile, decode
    if isinstance(profile, SeccompProfile):
        return profile
    return decode(SeccompProfile, profile.model_dump(), "seccomp.profile")


@functools.lru_cache(maxsize=32)
def _compile_cached(profile: SeccompProfile, arch: str) -> bytes:
    # keyed on the profile itself: a Config is frozen and compares by value
    table = syscall_table.TABLES[arch]
    default_value = action_value(profile.default_action, profile.default_errno)
    a = _Asm()
    a.put(LD_W_ABS, OFF_ARCH)
    a.put(JMP_JEQ_K, syscall_table.AUDIT_ARCHES[arch], jt="arch_ok")
    a.ret(RET_KILL_PROCESS)
    a.mark("arch_ok")
    a.put(LD_W_ABS, OFF_NR)
    if arch == "x86_64":
        a.put(JMP_JEQ_K, 0xFFFFFFFF, jt="abi_ok")  # nr -1 (a tracer skipping): ENOSYS
        a.put(JMP_JGE_K, X32_SYSCALL_BIT, jf="abi_ok")
        a.ret(RET_KILL_PROCESS)
        a.mark("abi_ok")
    for name in ALWAYS_ALLOWED:     # checked first: rules cannot override them
        if name in table:
            a.put(JMP_JEQ_K, table[name], jt="always_allowed")
    default = (((), default_value),)
    ivs = _intervals(_handlers(profile, table), default, max(table.values()))
    _emit_tree(a, ivs, default_value)
    a.mark("always_allowed")
    a.ret(RET_ALLOW)
    prog = a.assemble()
    if len(prog) // 8 > MAX_INSNS:
        raise ValueError(f"seccomp: profile compiles to {len(prog) // 8} instructions "
                         f"(the kernel allows {MAX_INSNS})")
    return prog


def compile_filter(seccomp: Seccomp, arch: str | None = None) -> bytes | None:
    """BPF for the spec's seccomp section; None when unconfined."""
    if seccomp.mode == "unconfined":
        return None
    if seccomp.mode == "default":
        from .seccomp_default import DEFAULT_PROFILE
        return compile_profile(DEFAULT_PROFILE, arch)
    assert seccomp.profile is not None
    return compile_profile(seccomp.profile, arch)


# --- can the init still report? ---------------------------------------------------

# What the init needs between installing the filter and a successful execve: to
# exec, or to report why not over its sync socket (socket.send is sendto(2)).
REPORT_SYSCALLS = ("execve", "sendto")
_KILLING = ("kill", "kill_process", "trap")


def _decision(profile: SeccompProfile, name: str) -> str:
    """The action of the first rule naming ``name`` ("conditional" if it has args)."""
    for rule in profile.syscalls:
        if name in rule.names:
            return "conditional" if rule.args else rule.action
    return profile.default_action


def silent_failure_risk(profile: SeccompProfile) -> str | None:
    """Why a process under ``profile`` might die before execve without reporting
    why; None when it can always exec or report."""
    blocked = [f"{name} ({d})" for name in REPORT_SYSCALLS
               if (d := _decision(profile, name)) not in ("allow", "log")]
    parts = [f"does not allow {', '.join(blocked)}"] if blocked else []
    if profile.default_action in _KILLING or any(r.action in _KILLING for r in profile.syscalls):
        parts.append("kills or traps some syscalls")
    if profile.default_action not in ("allow", "log") and not blocked:
        parts.append(f"denies by default ({profile.default_action})")
    return "the seccomp profile " + " and ".join(parts) if parts else None


# --- installing (in the child) ------------------------------------------------

class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class PreparedFilter:
    """A filter's bytes already in C memory, so the child only makes the syscall.

    ``risk``: why a process under it might die before execve without reporting
    (see silent_failure_risk); None for the default profile.
    """

    def __init__(self, prog: bytes, risk: str | None = None) -> None:
        if not prog or len(prog) % 8:
            raise ValueError("seccomp: a BPF program is a non-empty multiple of 8 bytes")
        self.buf = ctypes.create_string_buffer(prog, len(prog))  # kept alive with self
        self.fprog = _SockFprog(len(prog) // 8, ctypes.addressof(self.buf))
        self.risk = risk

    def __reduce__(self) -> tuple[Any, ...]:
        # (the fork server gets it pickled: the C memory is laid out again there)
        return (PreparedFilter, (self.buf.raw, self.risk))


def prepare(seccomp: Seccomp) -> PreparedFilter | None:
    """Parent side: compile (cached) and lay the program out in C memory."""
    prog = compile_filter(seccomp)
    if prog is None:
        return None
    # The default profile allows all the runtime needs; only custom ones are checked.
    risk = (silent_failure_risk(plain(seccomp.profile))
            if seccomp.mode == "profile" and seccomp.profile else None)
    return PreparedFilter(prog, risk)


def install(filt: bytes | PreparedFilter, syscalls: Syscalls = LIBC) -> None:
    """Child side: install the filter (needs no_new_privs or CAP_SYS_ADMIN), through the seam."""
    syscalls.install_seccomp(filt if isinstance(filt, PreparedFilter) else PreparedFilter(filt))
