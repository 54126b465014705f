"""The seccomp BPF compiler, run through an independent BPF interpreter."""

from __future__ import annotations

import errno

import bpf_interp as bpf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execdriver import spec
from execdriver.kernel import seccomp, syscall_table
from execdriver.kernel.seccomp_default import ALLOWED, DEFAULT_PROFILE, DENIED

X86 = syscall_table.X86_64
ARM = syscall_table.AARCH64
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
# glibc's fork(): CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
FORK_FLAGS = 0x01200000 | SIGCHLD
# glibc's pthread_create() fallback clone flags
THREAD_FLAGS = 0x003D0F00


def decide(prog: bytes, nr: int, args: tuple[int, ...] = (), arch: int = bpf.AUDIT_ARCH_X86_64):
    return bpf.action(bpf.run(prog, bpf.seccomp_data(nr, arch, args))[0])


@pytest.fixture(scope="module")
def default_x86() -> bytes:
    prog = seccomp.compile_profile(DEFAULT_PROFILE, "x86_64")
    bpf.check(bpf.decode(prog))
    return prog


EPERM = ("errno", errno.EPERM)
ENOSYS = ("errno", errno.ENOSYS)
ALLOW = ("allow", 0)


# --- the default profile -----------------------------------------------------

def test_default_profile_is_small_and_well_formed(default_x86: bytes) -> None:
    insns = bpf.decode(default_x86)
    assert len(insns) < 4096
    assert len(insns) < 400  # the interval tree keeps it compact
    bpf.check(insns)
    # the longest path through the filter stays short (binary search, not a scan)
    assert max(bpf.run(insns, bpf.seccomp_data(nr))[1] for nr in range(600)) < 40


@pytest.mark.parametrize("name,expected", [
    ("keyctl", EPERM), ("add_key", EPERM), ("unshare", EPERM), ("mount", EPERM),
    ("ptrace", EPERM), ("bpf", EPERM), ("open_by_handle_at", EPERM), ("kexec_load", EPERM),
    ("read", ALLOW), ("write", ALLOW), ("openat", ALLOW), ("execve", ALLOW),
    ("exit_group", ALLOW), ("clone3", ENOSYS), ("arch_prctl", ALLOW),
])
def test_default_decisions(default_x86: bytes, name: str, expected: tuple) -> None:
    assert decide(default_x86, X86[name]) == expected


def test_default_unknown_numbers_are_enosys(default_x86: bytes) -> None:
    assert decide(default_x86, 999) == ENOSYS
    assert decide(default_x86, syscall_table.MAX_KNOWN + 1) == ENOSYS
    assert decide(default_x86, 0x3FFFFFFF) == ENOSYS
    assert decide(default_x86, 0xFFFFFFFF) == ENOSYS  # nr -1


def test_default_rejects_wrong_arch_and_x32(default_x86: bytes) -> None:
    assert decide(default_x86, X86["read"], arch=0x40000003)[0] == "kill_process"  # i386
    assert decide(default_x86, X86["read"], arch=bpf.AUDIT_ARCH_AARCH64)[0] == "kill_process"
    assert decide(default_x86, 0x40000000 | X86["read"])[0] == "kill_process"
    assert decide(default_x86, 0x40000000 | X86["keyctl"])[0] == "kill_process"


def test_default_clone(default_x86: bytes) -> None:
    nr = X86["clone"]
    assert decide(default_x86, nr, (FORK_FLAGS,)) == ALLOW
    assert decide(default_x86, nr, (THREAD_FLAGS,)) == ALLOW
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, CLONE_NEWUSER,
                 0x20000000, 0x40000000):
        assert decide(default_x86, nr, (FORK_FLAGS | flag,)) == EPERM, hex(flag)
    # flags beyond 32 bits do not confuse the masked compare
    assert decide(default_x86, nr, ((1 << 40) | FORK_FLAGS,)) == ALLOW
    assert decide(default_x86, nr, ((1 << 40) | CLONE_NEWUSER,)) == EPERM


def test_default_personality_and_socket(default_x86: bytes) -> None:
    nr = X86["personality"]
    for ok in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert decide(default_x86, nr, (ok,)) == ALLOW
    for bad in (0x0040000, 0x0400000, 1, 0x1_0000_0000):  # ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC
        assert decide(default_x86, nr, (bad,)) == EPERM
    assert decide(default_x86, X86["socket"], (2,)) == ALLOW      # AF_INET
    assert decide(default_x86, X86["socket"], (40,)) == EPERM     # AF_VSOCK


def test_default_denied_list_is_denied(default_x86: bytes) -> None:
    assert not set(ALLOWED) & set(DENIED)
    for name in DENIED:
        if name in X86:
            expected = ENOSYS if name == "clone3" else EPERM
            assert decide(default_x86, X86[name]) == expected, name
    for name in ("process_vm_readv", "process_vm_writev", "kcmp", "userfaultfd", "setns",
                 "pivot_root", "umount2", "move_mount", "fsopen", "settimeofday", "iopl"):
        assert decide(default_x86, X86[name]) == EPERM, name


def test_default_denies_io_uring(default_x86: bytes) -> None:
    # Issue 18: io_uring was allowed; Docker's and containers-common's defaults deny it.
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert name not in ALLOWED and name in DENIED
        assert decide(default_x86, X86[name]) == EPERM, name


def test_default_allowlist_names_are_real() -> None:
    for name in ALLOWED:
        assert name in X86 or name in ARM, name
    assert len([n for n in ALLOWED if n in X86]) > 290


def test_default_on_aarch64() -> None:
    prog = seccomp.compile_profile(DEFAULT_PROFILE, "aarch64")
    bpf.check(bpf.decode(prog))
    a = bpf.AUDIT_ARCH_AARCH64
    assert decide(prog, ARM["read"], arch=a) == ALLOW
    assert decide(prog, ARM["keyctl"], arch=a) == EPERM
    assert decide(prog, ARM["clone"], (CLONE_NEWUSER,), arch=a) == EPERM
    assert decide(prog, ARM["clone"], (FORK_FLAGS,), arch=a) == ALLOW
    assert decide(prog, ARM["clone3"], arch=a) == ENOSYS
    assert decide(prog, 999, arch=a) == ENOSYS
    assert decide(prog, ARM["read"])[0] == "kill_process"  # x86_64 arch token
    # no x32 check on aarch64: a high number is just unknown
    assert decide(prog, 0x40000000, arch=a) == ENOSYS


# --- compile_filter ------------------------------------------------------------

def test_unconfined_is_none_and_cache_hits() -> None:
    assert seccomp.compile_filter(spec.Seccomp(mode="unconfined")) is None
    first = seccomp.compile_filter(spec.Seccomp())
    assert seccomp.compile_filter(spec.Seccomp()) is first
    prof = spec.SeccompProfile(syscalls=[spec.SeccompRule(names=["read"])])
    a = seccomp.compile_filter(spec.Seccomp(mode="profile", profile=prof))
    b = seccomp.compile_filter(spec.Seccomp(mode="profile", profile=prof.model_copy(deep=True)))
    assert a is b and a != first


def test_unknown_syscall_names() -> None:
    bad = spec.SeccompProfile(syscalls=[spec.SeccompRule(names=["read", "frobnicate"])])
    with pytest.raises(ValueError, match="frobnicate"):
        seccomp.compile_profile(bad, "x86_64")
    # names of other architectures are skipped, like runc
    other = spec.SeccompProfile(syscalls=[spec.SeccompRule(
        names=["read", "chown32", "_llseek", "arm_fadvise64_64", "s390_pci_mmio_read"])])
    prog = seccomp.compile_profile(other, "x86_64")
    assert decide(prog, X86["read"]) == ALLOW
    # x86-only names on aarch64
    prog = seccomp.compile_profile(spec.SeccompProfile(syscalls=[spec.SeccompRule(
        names=["arch_prctl", "open", "read"])]), "aarch64")
    assert decide(prog, ARM["read"], arch=bpf.AUDIT_ARCH_AARCH64) == ALLOW


@pytest.mark.parametrize("action,errno_,expected", [
    ("allow", None, 0x7FFF0000), ("errno", None, 0x00050001), ("errno", 13, 0x0005000D),
    ("kill", None, 0), ("kill_process", None, 0x80000000), ("trap", None, 0x00030000),
    ("log", None, 0x7FFC0000), ("trace", None, 0x7FF00000), ("trace", 7, 0x7FF00007),
])
def test_actions(action: str, errno_: int | None, expected: int) -> None:
    prof = spec.SeccompProfile(default_action="allow", syscalls=[
        spec.SeccompRule(names=["getpid"], action=action, errno=errno_)])
    prog = seccomp.compile_profile(prof, "x86_64")
    assert bpf.run(prog, bpf.seccomp_data(X86["getpid"]))[0] == expected
    assert bpf.run(prog, bpf.seccomp_data(X86["read"]))[0] == 0x7FFF0000


def test_default_errno_and_first_match_wins() -> None:
    prof = spec.SeccompProfile(default_action="errno", default_errno=errno.EACCES, syscalls=[
        spec.SeccompRule(names=["read"], action="errno", errno=errno.EIO,
                         args=[spec.SeccompArg(index=0, value=3)]),
        spec.SeccompRule(names=["read"], action="allow"),
        spec.SeccompRule(names=["read"], action="kill"),   # dead: after an unconditional rule
    ])
    prog = seccomp.compile_profile(prof, "x86_64")
    assert decide(prog, X86["read"], (3,)) == ("errno", errno.EIO)
    assert decide(prog, X86["read"], (4,)) == ALLOW
    assert decide(prog, X86["write"]) == ("errno", errno.EACCES)


# --- 64-bit argument comparisons -------------------------------------------------

def expected_match(op: str, arg: int, value: int, value_two: int) -> bool:
    return {"eq": arg == value, "ne": arg != value, "lt": arg < value, "le": arg <= value,
            "gt": arg > value, "ge": arg >= value,
            "masked_eq": arg & value == value_two}[op]


U64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(
    [0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1, 0xFFFFFFFF00000000]))
OPS = st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "masked_eq"])


@settings(max_examples=400, deadline=None)
@given(op=OPS, index=st.integers(0, 5), value=U64, value_two=U64, arg=U64,
       near=st.sampled_from([0, 1, -1, 2**32, -(2**32), None]))
def test_argument_comparisons(op: str, index: int, value: int, value_two: int, arg: int,
                              near: int | None) -> None:
    if near is not None:  # probe the boundaries, where hi/lo word handling goes wrong
        arg = (value + near) % 2**64
    prof = spec.SeccompProfile(default_action="errno", default_errno=5, syscalls=[
        spec.SeccompRule(names=["ioctl"], args=[
            spec.SeccompArg(index=index, value=value, value_two=value_two, op=op)])])
    prog = seccomp.compile_profile(prof, "x86_64")
    args = tuple(arg if i == index else 0xDEAD for i in range(6))
    want = ALLOW if expected_match(op, arg, value, value_two) else ("errno", 5)
    assert decide(prog, X86["ioctl"], args) == want


@settings(max_examples=100, deadline=None)
@given(conds=st.lists(st.tuples(OPS, st.integers(0, 5), U64, U64), min_size=1, max_size=4),
       rules=st.integers(1, 3), args=st.tuples(*[U64] * 6))
def test_rules_and_conditions(conds: list, rules: int, args: tuple) -> None:
    """Conditions of a rule are ANDed; rules for one syscall are tried in order."""
    rule_list = [spec.SeccompRule(names=["ioctl"], action="errno", errno=100 + r, args=[
        spec.SeccompArg(index=i, value=v, value_two=v2, op=op) for op, i, v, v2 in conds[r:]])
        for r in range(min(rules, len(conds)))]
    prof = spec.SeccompProfile(default_action="allow", syscalls=rule_list)
    prog = seccomp.compile_profile(prof, "x86_64")
    want = ALLOW
    for r, rule in enumerate(rule_list):
        if all(expected_match(a.op, args[a.index], a.value, a.value_two) for a in rule.args):
            want = ("errno", 100 + r)
            break
    assert decide(prog, X86["ioctl"], args) == want


# --- big programs: long jumps ------------------------------------------------------

def test_big_profile_needs_long_jumps_and_still_decides_right() -> None:
    names = sorted(X86, key=X86.get)[:330]
    rules = [spec.SeccompRule(names=[n], action="errno", errno=X86[n] % 4000 + 1,
                              args=[spec.SeccompArg(index=X86[n] % 6, value=X86[n], op="eq")])
             for n in names]
    prof = spec.SeccompProfile(default_action="allow", syscalls=rules)
    prog = seccomp.compile_profile(prof, "x86_64")
    insns = bpf.decode(prog)
    bpf.check(insns)
    assert len(insns) > 600 and any(i.code == 0x05 for i in insns)  # BPF_JA trampolines used
    for n in names:
        nr = X86[n]
        hit = tuple(nr if i == nr % 6 else 0 for i in range(6))
        miss = tuple(nr + 1 if i == nr % 6 else 0 for i in range(6))
        want = ALLOW if n in seccomp.ALWAYS_ALLOWED else ("errno", nr % 4000 + 1)
        assert decide(prog, nr, hit) == want, n
        assert decide(prog, nr, miss) == ALLOW, n


def test_equal_neighbours_share_code() -> None:
    args = [spec.SeccompArg(index=i % 6, value=i, op="gt") for i in range(12)]
    rules = [spec.SeccompRule(names=[n], action="allow", args=args) for n in list(X86)[:300]]
    prog = seccomp.compile_profile(spec.SeccompProfile(syscalls=rules), "x86_64")
    assert len(prog) // 8 < 100


def test_too_big_profile_is_refused() -> None:
    rules = [spec.SeccompRule(names=[n], action="allow", args=[
        spec.SeccompArg(index=i % 6, value=i + j, op="gt") for i in range(12)])
        for j, n in enumerate(list(X86)[:300])]
    with pytest.raises(ValueError, match="instructions"):
        seccomp.compile_profile(spec.SeccompProfile(syscalls=rules), "x86_64")


def test_prepared_filter_validates_bytes() -> None:
    with pytest.raises(ValueError):
        seccomp.PreparedFilter(b"\0" * 7)
    pf = seccomp.PreparedFilter(seccomp.compile_filter(spec.Seccomp()))
    assert pf.fprog.len == len(seccomp.compile_filter(spec.Seccomp())) // 8


# --- a profile can never make a process unable to die ------------------------------------

@pytest.mark.parametrize("arch,table,audit", [("x86_64", X86, bpf.AUDIT_ARCH_X86_64),
                                              ("aarch64", ARM, bpf.AUDIT_ARCH_AARCH64)])
@pytest.mark.parametrize("action", ["errno", "kill", "kill_process", "trap", "trace"])
def test_exit_and_exit_group_are_always_allowed(arch: str, table: dict, audit: int,
                                                action: str) -> None:
    for default in ("errno", "kill_process"):
        prof = spec.SeccompProfile(default_action=default, syscalls=[
            spec.SeccompRule(names=["exit_group", "exit"], action=action, errno=1),
            spec.SeccompRule(names=["exit_group"], action="errno",
                             args=[spec.SeccompArg(index=0, value=0)])])
        prog = seccomp.compile_profile(prof, arch)
        bpf.check(bpf.decode(prog))
        for name in seccomp.ALWAYS_ALLOWED:
            assert decide(prog, table[name], (0,), audit) == ALLOW, (name, default)
        assert decide(prog, table["execve"], (), audit) != ALLOW


# --- when the init may be unable to report -------------------------------------------------

def test_default_profile_has_no_silent_failure_risk() -> None:
    assert seccomp.prepare(spec.Seccomp()).risk is None
    assert seccomp.prepare(spec.Seccomp(mode="unconfined")) is None


@pytest.mark.parametrize("profile,risk", [
    ({"default_action": "allow"}, None),
    ({"default_action": "log", "syscalls": [{"names": ["keyctl"], "action": "errno"}]}, None),
    ({"default_action": "errno", "syscalls": [{"names": ["personality"], "action": "allow"}]},
     "the seccomp profile does not allow execve (errno), sendto (errno)"),
    ({"default_action": "allow", "syscalls": [{"names": ["execve"], "action": "errno"}]},
     "the seccomp profile does not allow execve (errno)"),
    ({"default_action": "allow", "syscalls": [
        {"names": ["sendto"], "action": "allow", "args": [{"index": 3, "value": 0}]}]},
     "the seccomp profile does not allow sendto (conditional)"),
    ({"default_action": "allow", "syscalls": [{"names": ["ptrace"], "action": "kill_process"}]},
     "the seccomp profile kills or traps some syscalls"),
    ({"default_action": "errno", "syscalls": [{"names": ["execve", "sendto"], "action": "allow"}]},
     "the seccomp profile denies by default (errno)"),
    ({"default_action": "trap", "syscalls": [{"names": ["execve"], "action": "allow"}]},
     "the seccomp profile does not allow sendto (trap) and kills or traps some syscalls"),
])
def test_silent_failure_risk(profile: dict, risk: str | None) -> None:
    prof = spec.SeccompProfile.model_validate(profile)
    assert seccomp.silent_failure_risk(prof) == risk
    assert seccomp.prepare(spec.Seccomp(mode="profile", profile=prof)).risk == risk


def test_a_prepared_filter_survives_pickling(default_x86: bytes) -> None:
    """The fork server gets it pickled: the program is laid out in C memory again."""
    import ctypes
    import pickle
    filt = seccomp.PreparedFilter(default_x86, risk="why")
    copy = pickle.loads(pickle.dumps(filt))  # noqa: S301 - our own bytes
    assert copy.risk == "why" and copy.fprog.len == len(default_x86) // 8
    assert ctypes.string_at(copy.fprog.filter, len(default_x86)) == default_x86
    assert copy.fprog.filter != filt.fprog.filter
