"""Pure parts of the cgroup layer: translations, parsing, device rules, the BPF program."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execdriver.config import Device
from execdriver.errors import InvalidArgument, StateCorrupt, StepFailed
from execdriver.kernel.cgroups import bpf_devices as bd
from execdriver.kernel.cgroups import check_name, manager_from_record, read_keyed, required_controllers
from execdriver.kernel.cgroups.devices import (
    DEFAULT_ALLOWED,
    DeviceEmulator,
    container_rules,
    rule_line,
    v1_writes,
)
from execdriver.kernel.cgroups.mountinfo import is_unified, parse_mountinfo, v1_hierarchies
from execdriver.kernel.cgroups.v1 import CgroupV1Manager, blkio_bytes, v1_memory_writes
from execdriver.kernel.cgroups.v2 import (
    CgroupV2Manager,
    blkio_to_io_weight,
    cpu_max,
    io_bytes,
    shares_to_weight,
    swap_max,
)
from execdriver.spec import DeviceRule, Resources

M = 1 << 20


@pytest.mark.parametrize("shares,weight", [(2, 1), (1024, 39), (512, 20), (262144, 10000)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("blkio,io", [(10, 1), (1000, 10000), (500, 4950)])
def test_blkio_to_io_weight(blkio: int, io: int) -> None:
    assert blkio_to_io_weight(blkio) == io


def test_swap_max() -> None:
    assert swap_max(64 * M, 128 * M) == str(64 * M)
    assert swap_max(64 * M, 64 * M) == "0"
    assert swap_max(64 * M, -1) == "max"
    assert swap_max(64 * M, None) is None
    with pytest.raises(StepFailed, match="needs a memory limit"):
        swap_max(None, 128 * M)


def test_cpu_max() -> None:
    assert cpu_max(50000, None) == "50000 100000"
    assert cpu_max(None, 200000) == "max 200000"
    assert cpu_max(20000, 50000) == "20000 50000"
    assert cpu_max(None, None) is None


@pytest.mark.parametrize("limit,swap,current,expected", [
    (64 * M, None, None, [("memory.limit_in_bytes", 64 * M)]),
    (None, 128 * M, None, [("memory.memsw.limit_in_bytes", 128 * M)]),
    # raising above the current limit: memsw first, or the kernel refuses memsw < limit
    (256 * M, 512 * M, 64 * M,
     [("memory.memsw.limit_in_bytes", 512 * M), ("memory.limit_in_bytes", 256 * M)]),
    (64 * M, 128 * M, 1 << 62,
     [("memory.limit_in_bytes", 64 * M), ("memory.memsw.limit_in_bytes", 128 * M)]),
    (64 * M, -1, 1 << 62,
     [("memory.memsw.limit_in_bytes", -1), ("memory.limit_in_bytes", 64 * M)]),
])
def test_v1_memory_writes(limit, swap, current, expected) -> None:  # type: ignore[no-untyped-def]
    assert v1_memory_writes(limit, swap, current) == expected


def test_stat_parsers() -> None:
    assert blkio_bytes("8:0 Read 100\n8:0 Write 7\n8:16 Read 1\n8:0 Sync 3\nTotal 108\n") == (101, 7)
    assert blkio_bytes(None) == (None, None)
    assert io_bytes("8:0 rbytes=10 wbytes=2 rios=1 wios=1\n8:16 rbytes=5 wbytes=0\n") == (15, 2)
    assert io_bytes("") == (0, 0)


def test_read_keyed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "memory.events"
    f.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\nbogus line here\n")
    assert read_keyed(str(f))["oom_kill"] == 1
    assert read_keyed(str(tmp_path / "missing")) == {}


def test_required_controllers() -> None:
    r = Resources.model_validate({"memory": {"limit": "1G"}, "cpu": {"cpus": "0"},
                                  "block_io": {"weight": 100}, "pids": {"limit": 3}})
    assert set(required_controllers(r, 1)) == {"memory", "cpuset", "blkio", "pids"}
    assert set(required_controllers(r, 2)) == {"memory", "cpuset", "io", "pids"}
    assert required_controllers(Resources(), 2) == {}
    assert required_controllers(Resources.model_validate({"cpu": {"period": 10000}}), 2) == \
        {"cpu": "resources.cpu"}


@pytest.mark.parametrize("bad", ["", "/", "a/../b", "..", "a//b", "./x", "a\0b"])
def test_check_name_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(bad)


def test_check_name_accepts() -> None:
    assert check_name("/execdriver/abc/") == "execdriver/abc"


# --- mountinfo ---------------------------------------------------------------

HYBRID = """\
23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls rw,relatime - cgroup cgroup rw,net_cls
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:32 / /mnt/mem\\040copy rw,relatime - cgroup cgroup rw,memory
garbage line
"""
UNIFIED = "24 1 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_parse_mountinfo() -> None:
    entries = parse_mountinfo(HYBRID)
    assert len(entries) == 9
    e = entries[2]
    assert (e.mount_id, e.parent_id, e.dev, e.mountpoint, e.fstype) == \
        (32, 31, "0:29", "/sys/fs/cgroup/cpu,cpuacct", "cgroup")
    assert e.super_options == "rw,cpu,cpuacct"
    assert entries[-1].mountpoint == "/mnt/mem copy"


def test_v1_hierarchies_and_detection() -> None:
    entries = parse_mountinfo(HYBRID)
    h = v1_hierarchies(entries)
    assert h == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                 "cpuset": "/sys/fs/cgroup/cpuset", "memory": "/sys/fs/cgroup/memory",
                 "name=systemd": "/sys/fs/cgroup/systemd"}
    assert not is_unified(entries, "/sys/fs/cgroup")          # hybrid: v1
    assert is_unified(entries, "/sys/fs/cgroup/unified/")
    assert is_unified(parse_mountinfo(HYBRID + UNIFIED), "/sys/fs/cgroup")   # mounted over
    assert v1_hierarchies(parse_mountinfo(UNIFIED)) == {}


def test_co_mounted_controllers_share_one_dir() -> None:
    mgr = CgroupV1Manager("ed/x", hierarchies=v1_hierarchies(parse_mountinfo(HYBRID)))
    assert len(mgr.procs_paths()) == 4
    assert "/sys/fs/cgroup/cpu,cpuacct/ed/x/cgroup.procs" in mgr.procs_paths()


def test_records_round_trip() -> None:
    v1 = CgroupV1Manager("ed/x", hierarchies={"memory": "/sys/fs/cgroup/memory"})
    assert manager_from_record(v1.record()).record() == v1.record()
    assert v1.record()["paths"] == {"memory": "/sys/fs/cgroup/memory/ed/x"}
    v2 = CgroupV2Manager("ed/x", "/sys/fs/cgroup")
    assert manager_from_record(v2.record()).record() == v2.record()
    assert v2.record()["path"] == "/sys/fs/cgroup/ed/x"
    with pytest.raises(StateCorrupt):
        manager_from_record({"version": 3})
    with pytest.raises(StateCorrupt):
        manager_from_record({"version": 2})


# --- device rules --------------------------------------------------------------

def test_rule_lines() -> None:
    lines = v1_writes(container_rules([DeviceRule(allow=True, type="b", major=7, minor=0,
                                                  access="wr")]))
    assert lines == [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"),
                     ("devices.allow", "c 1:5 rwm"), ("devices.allow", "c 1:7 rwm"),
                     ("devices.allow", "c 1:8 rwm"), ("devices.allow", "c 1:9 rwm"),
                     ("devices.allow", "c 5:0 rwm"), ("devices.allow", "c 5:2 rwm"),
                     ("devices.allow", "c 136:* rwm"), ("devices.allow", "b 7:0 rw")]
    assert rule_line(DeviceRule(allow=False, type="c", major=None, minor=2, access="m")) == "c *:2 m"


def test_emulator_default_container() -> None:
    emu = DeviceEmulator.from_rules(container_rules([]))
    assert not emu.default_allow and len(emu.exceptions()) == len(DEFAULT_ALLOWED)
    assert emu.allows("c", 1, 3, "rw") and emu.allows("c", 136, 42, "rwm")
    assert not emu.allows("c", 1, 1, "r") and not emu.allows("b", 7, 0, "r")
    assert not emu.allows("b", 1, 3, "r")     # type matters


def test_emulator_v1_semantics() -> None:
    emu = DeviceEmulator.from_rules(container_rules([
        DeviceRule(allow=True, type="c", major=10, minor=200, access="r"),
        DeviceRule(allow=True, type="c", major=10, minor=200, access="w"),    # merges to rw
        DeviceRule(allow=False, type="c", major=1, minor=3, access="w"),      # removes w
    ]))
    assert emu.allows("c", 10, 200, "rw") and not emu.allows("c", 10, 200, "m")
    assert emu.allows("c", 1, 3, "r") and not emu.allows("c", 1, 3, "rw")
    assert "c 1:3 rm" in emu.list_lines()
    black = DeviceEmulator.from_rules([DeviceRule(allow=True, type="a"),
                                       DeviceRule(allow=False, type="b", major=8, access="w")])
    assert black.allows("b", 8, 1, "r") and not black.allows("b", 8, 1, "rw")
    assert black.list_lines() == ["a *:* rwm"]


# --- the BPF program, run by a tiny interpreter --------------------------------

def run_bpf(code: bytes, type_: str, major: int, minor: int, access: str) -> int:
    """Execute encoded instructions the way the kernel would for our opcode subset."""
    ctx = [(bd.access_mask(access) << 16) | bd.DEV_TYPE[type_], major, minor]
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    regs: list[int] = [0] * 11
    pc = 0
    for _ in range(10000):
        op, r, off, imm = insns[pc]
        dst, src = r & 0xF, r >> 4
        pc += 1
        imm64 = imm & 0xFFFFFFFFFFFFFFFF      # sign-extended, as the kernel does
        if op == bd.LDX_MEM_W:
            assert src == 1 and off in (0, 4, 8)
            regs[dst] = ctx[off // 4]
        elif op == bd.ALU32_AND_K:
            regs[dst] = regs[dst] & imm & 0xFFFFFFFF
        elif op == bd.ALU32_RSH_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == bd.ALU32_MOV_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif op == bd.ALU64_MOV_K:
            regs[dst] = imm64
        elif op in (bd.JMP_JEQ_K, bd.JMP_JNE_K):
            assert off >= 0 and pc + off < len(insns)
            if (regs[dst] == imm64) == (op == bd.JMP_JEQ_K):
                pc += off
        elif op == bd.JMP_EXIT:
            assert regs[0] in (0, 1)
            return regs[0]
        else:
            raise AssertionError(f"unknown opcode {op:#x}")
    raise AssertionError("no exit")


def test_bpf_default_program() -> None:
    code = bd.encode(bd.build_program(container_rules([])))
    assert len(code) % 8 == 0
    assert code[:8] == struct.pack("<BBhi", 0x61, 0x12, 0, 0)     # r2 = *(u32 *)(r1 + 0)
    assert run_bpf(code, "c", 1, 3, "rw") == 1
    assert run_bpf(code, "c", 136, 3, "rwm") == 1
    assert run_bpf(code, "c", 1, 11, "r") == 0
    assert run_bpf(code, "b", 7, 0, "r") == 0
    code = bd.encode(bd.build_program(container_rules(
        [DeviceRule(allow=True, type="c", major=1, minor=11, access="r")])))
    assert run_bpf(code, "c", 1, 11, "r") == 1
    assert run_bpf(code, "c", 1, 11, "rw") == 0       # the exception must cover all access
    assert run_bpf(code, "c", 1, 11, "w") == 0
    code = bd.encode(bd.build_program([DeviceRule(allow=True, type="a"),
                                       DeviceRule(allow=False, type="b", major=8, access="w")]))
    assert run_bpf(code, "b", 8, 0, "r") == 1
    assert run_bpf(code, "b", 8, 0, "rw") == 0        # a deny hits any overlapping access
    assert run_bpf(code, "c", 8, 0, "w") == 1


ACCESS = st.sets(st.sampled_from("rwm"), min_size=1).map(lambda s: "".join(sorted(s)))
SMALL = st.one_of(st.none(), st.integers(0, 3))
RULE = st.builds(DeviceRule, allow=st.booleans(), type=st.sampled_from("bc"), major=SMALL,
                 minor=SMALL, access=ACCESS)
# start like a container does (deny all) or from allow-all, with an occasional "a" later
RULES = st.tuples(st.booleans(), st.lists(st.one_of(RULE, RULE, RULE, st.builds(
    DeviceRule, allow=st.booleans(), type=st.just("a"))), max_size=8)).map(
    lambda t: [DeviceRule(allow=t[0], type="a"), *t[1]])


@settings(max_examples=300, deadline=None)
@given(rules=RULES, type_=st.sampled_from("bc"), major=st.integers(0, 3),
       minor=st.integers(0, 3), access=ACCESS)
def test_bpf_program_agrees_with_v1_emulator(rules, type_, major, minor, access) -> None:  # type: ignore[no-untyped-def]
    """Whatever the rule list, the v2 program decides exactly as v1 would."""
    emu = DeviceEmulator.from_rules(rules)
    code = bd.encode(bd.build_program(rules))
    assert run_bpf(code, type_, major, minor, access) == int(emu.allows(type_, major, minor, access))


def test_bpf_program_allows_the_spec_device_nodes_the_rules_leave_open() -> None:
    """cgroup v2 gets the same node rules as v1 (container_rules for both)."""
    fuse = Device(path="/dev/fuse", type="c", major=10, minor=229)
    code = bd.encode(bd.build_program(container_rules([], [fuse])))
    assert run_bpf(code, "c", 10, 229, "rwm") == 1 and run_bpf(code, "c", 10, 228, "r") == 0
    deny = DeviceRule(allow=False, type="c", major=10, minor=229)
    code = bd.encode(bd.build_program(container_rules([deny], [fuse])))
    assert run_bpf(code, "c", 10, 229, "r") == 0      # the spec's rule decides


def test_swappiness_and_the_oom_killer_need_memory_on_v1_and_are_warnings_on_v2() -> None:
    r = Resources.model_validate({"memory": {"swappiness": 0, "disable_oom_killer": True}})
    assert required_controllers(r, 1) == {"memory": "resources.memory"}
    assert required_controllers(r, 2) == {}
    assert CgroupV2Manager("ed/x", "/sys/fs/cgroup").not_applied(r) == [  # type: ignore[arg-type]
        "resources.memory.swappiness: cgroup v2 has no memory.swappiness; ignored",
        "resources.memory.disable_oom_killer: cgroup v2 cannot disable the OOM killer; ignored"]
    v1 = CgroupV1Manager("ed/x", hierarchies={"memory": "/sys/fs/cgroup/memory"})
    assert v1.not_applied(r) == []      # type: ignore[arg-type]


def test_a_v1_memory_knob_the_host_lacks_is_an_error_naming_the_field(tmp_path: Path) -> None:
    from execdriver.config import MemoryResources
    from execdriver.config import Resources as PlainResources
    (tmp_path / "ed" / "x").mkdir(parents=True)
    v1 = CgroupV1Manager("ed/x", hierarchies={"memory": str(tmp_path)})
    for name in ("memory.limit_in_bytes", "memory.swappiness"):
        (tmp_path / "ed" / "x" / name).write_text("")
    v1.apply(PlainResources(memory=MemoryResources(swappiness=5)))
    assert (tmp_path / "ed" / "x" / "memory.swappiness").read_text() == "5"
    with pytest.raises(StepFailed, match=r"resources.memory.disable_oom_killer: not supported "
                                         r"on this host \(memory.oom_control missing\)"):
        v1.apply(PlainResources(memory=MemoryResources(disable_oom_killer=True)))
