"""Spec validation edge cases: sizes, NUL bytes, kernel ranges, seccomp syscall names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from execdriver.cli.overrides import cpu_quota
from execdriver.errors import SpecError
from execdriver.spec import (
    MAX_CPU_QUOTA,
    MAX_SIZE,
    SeccompProfile,
    SeccompRule,
    Spec,
    load_spec,
    parse_size,
    validate_spec,
)


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_spec({"root": {"path": "/x"}, **doc})
    return info.value.problems


# --- sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("64M", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("1.5GiB", 3 << 29), (" 10 m ", 10 << 20),
    ("0.5", 0), ("1.25k", 1280), ("007", 7), ("1." + "9" * 100, 1), (str(MAX_SIZE), MAX_SIZE),
    ("8191P", 8191 << 50), (4096, 4096), (-1, -1), (5.0, 5), (float(1 << 62), 1 << 62),
])
def test_sizes_are_exact(text: Any, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("value", [
    str(MAX_SIZE + 1), "8192P", "9" * 400, "9" * 400 + "G", "0" * 50 + "9" * 20, MAX_SIZE + 1,
    2 ** 64, 1e19, 1e300,
])
def test_sizes_above_the_cgroup_range_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_size(value)
    assert problems({"resources": {"memory": {"limit": value}}}) == [
        f"resources.memory.limit: too large (at most {MAX_SIZE} bytes)"]


@pytest.mark.parametrize("value", ["1e3", "1.5.5", "M", "10MiBB", "", "inf", "nan", "-1M"])
def test_size_syntax_errors(value: str) -> None:
    assert problems({"resources": {"memory": {"limit": value}}}) == [
        f"resources.memory.limit: {value!r} is not a size (use e.g. 64M, 1G)"]


def test_non_integral_and_non_finite_floats_are_refused() -> None:
    for value in (1.5, float("inf"), float("nan")):
        assert problems({"resources": {"memory": {"limit": value}}})[0].startswith(
            "resources.memory.limit: ")


def test_unlimited_swap_is_still_minus_one() -> None:
    spec = validate_spec({"root": {"path": "/x"}, "resources": {"memory": {"limit": "1G", "swap": -1}}})
    assert spec.resources.memory.swap == -1


# --- NUL bytes ------------------------------------------------------------------------------

NUL = "a\0b"


@pytest.mark.parametrize("doc,field", [
    ({"root": {"path": NUL}}, "root.path"),
    ({"process": {"args": ["/bin/sh", NUL]}}, "process.args[1]"),
    ({"process": {"env": {"A": NUL}}}, "process.env.A"),
    ({"process": {"env": ["A=" + NUL]}}, "process.env.A"),
    ({"process": {"cwd": "/" + NUL}}, "process.cwd"),
    ({"process": {"apparmor_profile": NUL}}, "process.apparmor_profile"),
    ({"mounts": [{"destination": "/" + NUL, "type": "tmpfs"}]}, "mounts[0].destination"),
    ({"mounts": [{"destination": "/d", "source": NUL}]}, "mounts[0].source"),
    ({"mounts": [{"destination": "/d", "type": NUL}]}, "mounts[0].type"),
    ({"mounts": [{"destination": "/d", "type": "tmpfs", "options": ["ro", NUL]}]},
     "mounts[0].options[1]"),
    ({"namespaces": [{"type": "pid", "path": "/" + NUL}], "network": {"mode": "host"}},
     "namespaces[0].path"),
    ({"network": {"mode": "netns", "netns_path": "/" + NUL}}, "network.netns_path"),
    ({"network": {"mode": "container", "container": NUL}}, "network.container"),
    ({"network": {"bridge": NUL}}, "network.bridge"),
    ({"network": {"dns": ["1.1.1.1", NUL]}}, "network.dns[1]"),
    ({"hooks": {"prestart": [{"path": "/" + NUL}]}}, "hooks.prestart[0].path"),
    ({"hooks": {"poststop": [{"path": "/h", "args": [NUL]}]}}, "hooks.poststop[0].args[0]"),
    ({"hooks": {"poststart": [{"path": "/h", "env": [NUL]}]}}, "hooks.poststart[0].env[0]"),
    ({"sysctls": {"kernel.shmmax": NUL}}, "sysctls.kernel.shmmax"),
    ({"masked_paths": ["/proc/kcore", "/" + NUL]}, "masked_paths[1]"),
    ({"readonly_paths": ["/" + NUL]}, "readonly_paths[0]"),
])
def test_nul_in_strings_the_kernel_gets_names_the_field(doc: dict[str, Any], field: str) -> None:
    assert f"{field}: must not contain a NUL byte" in problems(doc)


@pytest.mark.parametrize("doc,field", [
    ({"process": {"env": {NUL: "x"}}}, "process.env: bad environment variable name"),
    ({"hostname": NUL, "namespaces": [{"type": "uts"}, {"type": "network"}]}, "hostname: "),
    ({"sysctls": {"kernel." + NUL: "1"}}, "sysctls: bad sysctl name"),
    ({"seccomp": {"mode": "profile", "profile": {"syscalls": [{"names": [NUL]}]}}},
     "seccomp.profile: unknown syscall"),
])
def test_nul_in_names_is_refused_by_their_own_checks(doc: dict[str, Any], field: str) -> None:
    found = problems(doc)
    assert any(line.startswith(field) for line in found), found
    assert not any("\0" in line for line in found), found


def test_load_spec_with_nul_in_a_relative_root_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"root": {"path": "root" + NUL}}))
    with pytest.raises(SpecError, match=r"root\.path: must not contain a NUL byte"):
        load_spec(path)


# --- patterns are whole-string matches (re's $ also matches before a final newline) ----------

@pytest.mark.parametrize("doc,field", [
    ({"hostname": "box\n", "namespaces": [{"type": "uts"}, {"type": "network"}]}, "hostname"),
    ({"domainname": "ex.org\n"}, "domainname"),
    ({"resources": {"cpu": {"cpus": "0-1\n"}}}, "resources.cpu.cpus"),
    ({"resources": {"cpu": {"mems": "0\n"}}}, "resources.cpu.mems"),
    ({"sysctls": {"kernel.shmmax\n": "1"}}, "sysctls"),
])
def test_trailing_newline_is_refused(doc: dict[str, Any], field: str) -> None:
    assert any(line.startswith(field + ": ") for line in problems(doc))


# --- cpu quota ---------------------------------------------------------------------------------

def test_cpu_quota_is_within_the_kernels_range() -> None:
    spec = validate_spec({"root": {"path": "/x"}, "resources": {"cpu": {"quota": MAX_CPU_QUOTA}}})
    assert spec.resources.cpu.quota == MAX_CPU_QUOTA
    assert problems({"resources": {"cpu": {"quota": MAX_CPU_QUOTA + 1}}}) == [
        f"resources.cpu.quota: at most {MAX_CPU_QUOTA} (the kernel's limit)"]
    assert problems({"resources": {"cpu": {"quota": 999}}})[0].startswith("resources.cpu.quota: ")


@pytest.mark.parametrize("text,quota", [("0.01", 1000), ("1.5", 150000), ("175921860", 17592186000000)])
def test_cpus_flag_in_range(text: str, quota: int) -> None:
    found: list[str] = []
    assert cpu_quota(text, found) == quota and found == []


@pytest.mark.parametrize("text,problem", [
    ("1e308", "--cpus: must be between 0.01 and 175921860"),
    ("175921861", "--cpus: must be between 0.01 and 175921860"),
    ("1e-9", "--cpus: must be between 0.01 and 175921860"),
    ("inf", "--cpus: must be a number > 0"), ("nan", "--cpus: must be a number > 0"),
    ("0", "--cpus: must be a number > 0"), ("x", "--cpus: 'x' is not a number"),
])
def test_cpus_flag_out_of_range_is_one_flag_problem(text: str, problem: str) -> None:
    found: list[str] = []
    assert cpu_quota(text, found) is None and found == [problem]


# --- seccomp syscall names -----------------------------------------------------------------------

def _profile(*names: str) -> dict[str, Any]:
    return {"mode": "profile", "profile": {"default_action": "allow", "syscalls": [
        {"names": list(names), "action": "errno"}]}}


def test_unknown_syscall_names_are_refused() -> None:
    assert problems({"seccomp": _profile("read", "no_such_syscall")}) == [
        "seccomp.profile: unknown syscall 'no_such_syscall' (syscalls[0].names)"]
    doc = _profile("bogus1")
    doc["profile"]["syscalls"].append({"names": ["write", "bogus2"]})
    assert problems({"seccomp": doc}) == [
        "seccomp.profile: unknown syscalls 'bogus1' (syscalls[0].names), 'bogus2' (syscalls[1].names)"]


def test_unknown_syscall_names_are_refused_on_construction_too() -> None:
    with pytest.raises(ValidationError, match="no_such_syscall"):
        Spec(root={"path": "/x"}, seccomp=_profile("no_such_syscall"))


def test_syscall_names_of_other_abis_are_accepted() -> None:
    # the compiler skips them, as libseccomp-based runtimes do for other architectures
    spec = validate_spec({"root": {"path": "/x"}, "seccomp": _profile("chown32", "arch_prctl", "read")})
    assert spec.seccomp.profile is not None
    assert spec.seccomp.profile.syscalls[0].names == ["chown32", "arch_prctl", "read"]


def test_a_bare_profile_is_left_to_the_compilers_own_check() -> None:
    # kernel/seccomp.py refuses unknown names itself; only a container's profile is checked here
    prof = SeccompProfile(syscalls=[SeccompRule(names=["frobnicate"])])
    assert prof.syscalls[0].names == ["frobnicate"]


def test_a_joined_mount_namespace_with_a_new_user_namespace_is_refused() -> None:
    ids = [{"container_id": 0, "host_id": 100000, "size": 65536}]
    doc = {"namespaces": [{"type": "mount", "path": "/proc/7/ns/mnt"}, {"type": "user"}],
           "uid_mappings": ids, "gid_mappings": ids}
    assert problems(doc) == ["joining a mount namespace needs the user namespace "
                             "that owns it: join that one by path too, or create no user namespace"]
    doc["namespaces"][1]["path"] = "/proc/7/ns/user"
    doc["network"] = {"mode": "host"}
    validate_spec({"root": {"path": "/x"}, **doc, "uid_mappings": [], "gid_mappings": []})
