"""Fuzzing the spec and the CLI's run flags: only our typed errors, never a traceback.

- 2000 generated spec documents (plausible values mixed with junk) through
  ``validate_spec``: a Spec or a SpecError with one ``field: reason`` line per
  problem; every valid one survives the JSON round trip the state store does
  and each driver's ``check_spec`` (ExecDriverError or nothing).
- 400 valid-leaning specs through the translations (native InitConfig, LXC
  config items): ExecDriverError or a result.
- 300 generated ``execdriver run`` command lines through the CLI's parsing and
  spec building (no container is started): UsageError or a typed error, whose
  printed form is one line and never "internal error".
- 200 random spec files through ``load_spec``.
- 12 valid specs the host can honour are really run (native), and 4 with the
  chroot driver: the exit code is the generated one, and nothing is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fuzz_strategies as fz
import pytest
from hardening_helpers import assert_clean, cli, kill_marked, new_id
from hypothesis import given, note
from hypothesis import strategies as st

from execdriver.errors import ExecDriverError, SpecError


def _check_problems(exc: SpecError) -> None:
    """One non-empty problem per line (a field *name* from the input may hold a newline:
    the CLI prints each problem through one_line)."""
    assert exc.problems, "a SpecError without problems"
    for line in exc.problems:
        assert isinstance(line, str) and line.strip(), repr(line)
    for line in exc.lines():
        assert line.startswith("invalid spec: ")


def _drivers() -> list[Any]:
    from execdriver.loader import load_driver
    out = []
    for name in ("native", "chroot", "lxc"):
        try:
            out.append(load_driver(name, state_root="/nonexistent-fuzz-root", check_available=False))
        except ExecDriverError:
            pass
    return out


DRIVERS = _drivers()
STATS = fz.Outcomes()
report_counts = STATS.report_fixture("spec")
_count = STATS.count


# --- validation ------------------------------------------------------------------------------

@fz.fuzz_settings(2000)
@given(doc=fz.spec_documents)
def test_fuzzed_spec_documents_give_a_spec_or_a_spec_error(doc: dict[str, Any]) -> None:
    from execdriver.spec import Spec, validate_spec
    try:
        spec = validate_spec(doc)
    except SpecError as exc:
        _check_problems(exc)
        _count("spec invalid")
        return
    _count("spec valid")
    # what the state store writes (spec.json) must read back as the same spec
    assert Spec.model_validate_json(spec.model_dump_json()) == spec
    for driver in DRIVERS:
        try:
            driver.check_spec(spec)
        except ExecDriverError as exc:
            assert str(exc).strip()


# --- translation of valid-leaning specs ------------------------------------------------------

ROOTFS_PLACEHOLDER = "/rootfs-placeholder"
safe_text = st.text(st.characters(blacklist_characters="\0=", blacklist_categories=("Cs",)),
                    min_size=1, max_size=8)
default_caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_AUDIT_WRITE"]


@st.composite
def capability_sets(draw: Any) -> dict[str, list[str]]:
    bounding = draw(st.lists(st.sampled_from(default_caps), unique=True))
    permitted = draw(st.lists(st.sampled_from(bounding), unique=True)) if bounding else []
    effective = draw(st.lists(st.sampled_from(permitted), unique=True)) if permitted else []
    inheritable = draw(st.lists(st.sampled_from(permitted), unique=True)) if permitted else []
    ambient = draw(st.lists(st.sampled_from(inheritable), unique=True)) if inheritable else []
    return {"bounding": bounding, "permitted": permitted, "effective": effective,
            "inheritable": inheritable, "ambient": ambient}


@st.composite
def valid_leaning_specs(draw: Any, rootfs: str = ROOTFS_PLACEHOLDER) -> dict[str, Any]:
    namespaces = draw(st.lists(st.sampled_from(["pid", "network", "mount", "ipc", "uts", "cgroup",
                                                "time"]), unique=True))
    doc: dict[str, Any] = {"root": {"path": rootfs, "readonly": draw(st.booleans())},
                           "namespaces": [{"type": t} for t in namespaces]}
    doc["network"] = {"mode": "none" if "network" in namespaces else "host"}
    if "uts" in namespaces and draw(st.booleans()):
        doc["hostname"] = draw(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True))
    doc["process"] = {
        "args": draw(st.lists(safe_text, min_size=1, max_size=3)),
        "env": draw(st.dictionaries(safe_text, safe_text, max_size=3)),
        "cwd": draw(st.sampled_from(["/", "/tmp", "/etc", "/nonexistent"])),
        "user": {"uid": draw(st.integers(0, 70000)), "gid": draw(st.integers(0, 70000))},
        "umask": draw(st.integers(0, 0o777)),
        "rlimits": draw(st.lists(st.fixed_dictionaries({
            "type": st.sampled_from(["nofile", "core", "nproc", "stack"]),
            "soft": st.integers(0, 4096), "hard": st.just(4096)}), max_size=2,
            unique_by=lambda r: r["type"])),
        "capabilities": draw(capability_sets()),
        "no_new_privileges": draw(st.booleans()),
        "oom_score_adj": draw(st.one_of(st.none(), st.integers(-1000, 1000))),
        "preserve_fds": draw(st.integers(0, 3)),
    }
    doc["resources"] = {
        "memory": draw(st.sampled_from([{}, {"limit": "32M"}, {"limit": 1 << 30, "swap": -1},
                                        {"limit": "16M", "reservation": "8M"}])),
        "cpu": draw(st.sampled_from([{}, {"shares": 512}, {"quota": 50000, "period": 100000},
                                     {"cpus": "0"}, {"cpus": "0-1", "mems": "0"}])),
        "pids": draw(st.sampled_from([{}, {"limit": 20}])),
        "devices": draw(st.lists(st.fixed_dictionaries({
            "allow": st.booleans(), "type": st.sampled_from(["a", "c", "b"]),
            "major": st.one_of(st.none(), st.integers(0, 300)),
            "minor": st.one_of(st.none(), st.integers(0, 300)),
            "access": st.sampled_from(["r", "rw", "rwm", "m"])}), max_size=2)),
    }
    doc["seccomp"] = draw(st.sampled_from([
        {"mode": "default"}, {"mode": "unconfined"},
        {"mode": "profile", "profile": {"default_action": "allow", "syscalls": [
            {"names": ["keyctl", "add_key"], "action": "errno", "errno": 1}]}},
        {"mode": "profile", "profile": {"default_action": "errno", "syscalls": [
            {"names": ["chown32", "getpid"], "action": "allow"}]}},   # i386's chown32: skipped
        {"mode": "profile", "profile": {"syscalls": [
            {"names": ["personality"], "action": "allow",
             "args": [{"index": 0, "value": 8, "op": "eq"}]}]}},
    ]))
    doc["masked_paths"] = draw(st.lists(st.sampled_from(["/proc/kcore", "/proc/keys", "/sys/firmware",
                                                         "/nonexistent"]), unique=True))
    doc["readonly_paths"] = draw(st.lists(st.sampled_from(["/proc/sys", "/proc/bus"]), unique=True))
    if "network" in namespaces:
        doc["sysctls"] = draw(st.sampled_from([{}, {"net.ipv4.ip_forward": "1"},
                                               {"no.such.sysctl": "1"}]))
    doc["mounts"] = draw(st.sampled_from([
        [], [{"destination": "/proc", "type": "proc", "source": "proc"}],
        [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}],
        [{"destination": "/data", "type": "bind", "source": "/nonexistent-src", "options": ["rbind"]}],
    ]))
    return doc


@fz.fuzz_settings(400)
@given(doc=valid_leaning_specs())
def test_valid_specs_translate_or_fail_typed(doc: dict[str, Any], busybox_rootfs: Path) -> None:
    from execdriver.kernel import initconfig
    from execdriver.libcontainer.specconv import config_from_spec
    from execdriver.spec import validate_spec
    doc["root"]["path"] = str(busybox_rootfs)
    try:
        spec = validate_spec(doc)
    except SpecError as exc:
        _check_problems(exc)
        _count("translate: invalid")
        return
    _count("translate: valid")
    for driver in DRIVERS:
        try:
            driver.check_spec(spec)
        except ExecDriverError as exc:
            assert str(exc).strip()
    try:
        initconfig.build("fuzz-1", config_from_spec(spec), exit_file="/nonexistent/exit.json")
    except ExecDriverError as exc:
        note(f"native: {exc}")
    try:
        from execdriver_lxc.translate import spec_to_config
    except ImportError:
        return
    try:
        spec_to_config(spec, "fuzz-1", "/nonexistent/lxc", 1)
    except ExecDriverError as exc:
        note(f"lxc: {exc}")


# --- the CLI's run flags ----------------------------------------------------------------------

flag_values = {
    "--memory": fz.sizes.map(str), "--cpus": st.sampled_from(["0.5", "0", "-1", "nan", "inf", "1e308",
                                                             "x", "2", "1e-9"]),
    "--pids-limit": st.sampled_from(["10", "0", "-1", "x", "9" * 30, ""]),
    "--user": st.sampled_from(["0", "1000:1000", "nobody", "root:root", ":", "1000:", "x:y", "",
                               "99999999999999999999", "-1"]),
    "--env": st.sampled_from(["A=b", "A", "=x", "PATH=", "A=\x01"]),
    "--workdir": st.sampled_from(["/", "rel", "/tmp", ""]),
    "--hostname": st.sampled_from(["web", "-bad", "x" * 70, "", "a.b"]),
    "--cap-add": st.sampled_from(["NET_ADMIN", "ALL", "bogus", "", "cap_sys_admin"]),
    "--cap-drop": st.sampled_from(["ALL", "CHOWN", "bogus"]),
    "--network": st.sampled_from(["none", "host", "bridge", "container:", "container:x", "ns:",
                                  "ns:/nonexistent", "bogus"]),
    "--publish": st.sampled_from(["80:80", "1.2.3.4:80:80/udp", "99999:1", "a:b", "80", "80:80/sctp"]),
    "--volume": st.sampled_from(["/tmp:/data", "/tmp:/data:ro", "/nonexistent:/x", "nocolon",
                                 "/tmp:rel", "/tmp::ro"]),
    "--name": st.sampled_from(["ok1", "-bad", "a/b", "", "x" * 200, "..", "a b"]),
    "--driver": st.sampled_from(["native", "chroot", "lxc", "nosuch"]),
}


@fz.fuzz_settings(300)
@given(flags=st.lists(st.sampled_from(sorted(flag_values)), max_size=5).flatmap(
    lambda names: st.tuples(*[st.tuples(st.just(n), flag_values[n]) for n in names])),
    extra=st.sampled_from([[], ["--read-only"], ["-d", "-t"], ["--bogus-flag"], ["-i"]]))
def test_fuzzed_run_command_lines_fail_typed_and_on_one_line(flags: Any, extra: list[str],
                                                             busybox_rootfs: Path) -> None:
    from execdriver.cli.main import error_lines, parse_args
    from execdriver.cli.parser import UsageError
    from execdriver.cli.run import _check_detach_tty, build_spec
    from execdriver.state import validate_id
    argv = ["--root", "/nonexistent-fuzz-root", "run", "--rootfs", str(busybox_rootfs)]
    for name, value in flags:
        argv += [f"{name}={value}"]
    argv += extra + ["--", "/bin/true"]
    note(repr(argv))
    try:
        args = parse_args(argv)
        _check_detach_tty(args, "run")
        if args.name:
            validate_id(args.name)
        build_spec(args, args.driver)
        _count("cli: accepted")
    except (UsageError, ExecDriverError) as exc:
        lines = error_lines(exc)
        assert lines and all(ln.strip() and not ln.startswith("internal error") for ln in lines), lines
        _count("cli: refused")


# --- spec files --------------------------------------------------------------------------------

@fz.fuzz_settings(200)
@given(content=st.one_of(st.binary(max_size=200), fz.junk.map(lambda v: json.dumps(v).encode()),
                         fz.spec_documents.map(lambda v: json.dumps(v).encode())))
def test_fuzzed_spec_files_load_or_fail_typed(content: bytes, tmp_path_factory: Any) -> None:
    from execdriver.spec import load_spec
    path = tmp_path_factory.mktemp("specfile") / "spec.json"
    path.write_bytes(content)
    try:
        load_spec(path)
    except SpecError as exc:
        _check_problems(exc)


# --- a sample really run ---------------------------------------------------------------------

@st.composite
def runnable_specs(draw: Any) -> tuple[dict[str, Any], int]:
    """Valid specs this host can honour (no raised rlimits, no lowered oom_score_adj)."""
    from execdriver.spec import default_mounts
    code = draw(st.integers(0, 3))
    doc = draw(valid_leaning_specs())
    proc = doc["process"]
    proc["args"] = ["/bin/sh", "-c", f"exit {code}"]
    proc["env"] = {"PATH": "/bin:/usr/bin", **{k: v for k, v in proc["env"].items() if k != "PATH"}}
    proc["cwd"] = draw(st.sampled_from(["/", "/tmp", "/etc"]))
    proc["user"] = draw(st.sampled_from([{"uid": 0, "gid": 0}, {"uid": 1000, "gid": 1000},
                                         {"uid": 65534, "gid": 65534}]))
    proc["oom_score_adj"] = draw(st.one_of(st.none(), st.integers(0, 1000)))
    proc["preserve_fds"] = 0
    # a stack limit of 0 (say) is the spec's own way to fail: keep limits a shell can live with
    proc["rlimits"] = [dict(r, soft=max(r["soft"], 64)) for r in proc["rlimits"]
                       if r["type"] in ("nofile", "core")]
    proc["capabilities"]["bounding"] = sorted(set(proc["capabilities"]["bounding"]) | {"CAP_SETPCAP"})
    doc["resources"]["memory"] = draw(st.sampled_from([{}, {"limit": "64M"}]))
    doc["masked_paths"] = [p for p in doc["masked_paths"] if p != "/nonexistent"]
    # the default mounts (/proc, /dev, ...) plus what was drawn, bind mounts of missing paths aside
    doc["mounts"] = [m.model_dump() for m in default_mounts()] + [
        m for m in doc["mounts"] if m["type"] == "tmpfs"]
    doc.pop("sysctls", None)
    if doc["seccomp"]["mode"] == "profile" and \
            doc["seccomp"]["profile"].get("default_action", "errno") != "allow":
        # a deny-by-default profile without execve cannot run anything (it fails: see below)
        doc["seccomp"] = {"mode": "default"}
    for t in ("mount", "pid"):      # /proc, /dev and pivot_root need them
        if {"type": t} not in doc["namespaces"]:
            doc["namespaces"].append({"type": t})
    return doc, code


def _run_generated(driver_name: str, doc: dict[str, Any], code: int, root: str, rootfs: Path) -> None:
    from execdriver.driver import Stdio
    from execdriver.loader import load_driver
    from execdriver.spec import validate_spec
    driver = load_driver(driver_name, state_root=root)
    doc["root"]["path"] = str(rootfs)
    marker = new_id("m")
    doc["process"]["env"]["EDHARD"] = marker
    spec = validate_spec(doc)
    cid = new_id("fz")
    out = os.open(os.devnull, os.O_RDWR)
    try:
        status = driver.run(cid, spec, stdio=Stdio(out, out, out))
        assert status.exit_code == code, f"{driver_name}: exit {status.exit_code}, want {code}"
        _count(f"run {driver_name}: ok")
    finally:
        os.close(out)
        kill_marked(marker)
    assert_clean(root, cid, marker, rootfs)


@pytest.mark.root
@fz.fuzz_settings(12)
@given(case=runnable_specs())
def test_sample_of_valid_specs_really_runs_native(case: tuple[dict[str, Any], int],
                                                   busybox_rootfs: Path, tmp_path_factory: Any) -> None:
    doc, code = case
    _run_generated("native", doc, code, str(tmp_path_factory.mktemp("fzrun") / "s"), busybox_rootfs)


@pytest.mark.root
@fz.fuzz_settings(4)
@given(case=runnable_specs())
def test_sample_of_valid_specs_really_runs_chroot(case: tuple[dict[str, Any], int],
                                                   busybox_rootfs: Path, tmp_path_factory: Any) -> None:
    doc, code = case
    # the chroot driver: host network, a mount namespace only, no sysfs/cgroup mounts
    doc["namespaces"] = [{"type": "mount"}]
    doc["network"] = {"mode": "host"}
    doc.pop("hostname", None)
    doc["process"]["capabilities"] = {k: [c for c in v if c != "CAP_SYS_CHROOT"]
                                      for k, v in doc["process"]["capabilities"].items()}
    doc["mounts"] = [m for m in doc["mounts"] if m["type"] not in ("sysfs", "cgroup")]
    _run_generated("chroot", doc, code, str(tmp_path_factory.mktemp("fzrun") / "s"), busybox_rootfs)


# --- bugs found ----------------------------------------------------------------------------------

# parse_size did int(float(digits) * mult): OverflowError, a raw traceback from validate_spec
@pytest.mark.parametrize("value", ["9" * 400, "9" * 400 + "G"])
def test_huge_size_strings_are_a_spec_error(value: str) -> None:
    from execdriver.spec import validate_spec
    with pytest.raises(SpecError, match=r"resources\.memory\.limit"):
        validate_spec({"root": {"path": "/x"}, "resources": {"memory": {"limit": value}}})


# NUL got through to Path.resolve() in load_spec or to 'embedded null byte' in the init
@pytest.mark.parametrize("doc,field", [
    ({"process": {"env": {"A": "b\0c"}}}, "process.env"),
    ({"process": {"cwd": "/tm\0p"}}, "process.cwd"),
    ({"masked_paths": ["/proc/kc\0ore"]}, "masked_paths"),
    ({"readonly_paths": ["/proc/s\0ys"]}, "readonly_paths"),
    ({"root": {"path": "root\0fs"}}, "root.path"),
], ids=["env", "cwd", "masked", "readonly", "root"])
def test_nul_bytes_are_a_spec_error_naming_the_field(doc: dict[str, Any], field: str) -> None:
    from execdriver.spec import validate_spec
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        validate_spec({"root": {"path": "/x"}, **doc})


# huge numbers in run flags escaped as OverflowError ('internal error'): parse_size, cpu_quota
@pytest.mark.parametrize("flag,value", [("--memory", "9" * 400), ("--cpus", "1e308")],
                         ids=["memory", "cpus"])
def test_cli_huge_number_flags_are_a_one_line_field_error(flag: str, value: str,
                                                          busybox_rootfs: Path) -> None:
    from execdriver.cli.main import error_lines, parse_args
    from execdriver.cli.run import build_spec
    args = parse_args(["--root", "/nonexistent", "run", "--rootfs", str(busybox_rootfs),
                       flag, value, "--", "/bin/true"])
    with pytest.raises(ExecDriverError) as info:
        build_spec(args, "native")
    assert flag.strip("-") in error_lines(info.value)[0]


# an unknown syscall name passed validate_spec and check_spec; seccomp.py raised inside create
def test_unknown_syscall_name_is_refused_before_create() -> None:
    from execdriver.loader import load_driver
    from execdriver.spec import validate_spec
    doc = {"root": {"path": "/x"}, "seccomp": {"mode": "profile", "profile": {
        "default_action": "allow", "syscalls": [{"names": ["no_such_syscall"], "action": "errno"}]}}}
    with pytest.raises(ExecDriverError, match="no_such_syscall"):
        spec = validate_spec(doc)
        load_driver("native", state_root="/nonexistent", check_available=False).check_spec(spec)


# Found by this suite: oom_score_adj was written through the container's own /proc.
@pytest.mark.root
def test_oom_score_adj_works_without_a_proc_mount(busybox_rootfs: Path, tmp_path: Path) -> None:
    from execdriver.driver import Stdio
    from execdriver.loader import load_driver
    driver = load_driver("native", state_root=tmp_path / "state")
    spec = driver.default_spec(str(busybox_rootfs), ["/bin/true"])
    spec.mounts = [m for m in spec.mounts if m.destination != "/proc"]
    spec.process.oom_score_adj = 500
    null = os.open(os.devnull, os.O_RDWR)
    try:
        assert driver.run(new_id("oom"), spec, stdio=Stdio(null, null, null)).exit_code == 0
    finally:
        os.close(null)


EMBEDDED_RUN = """
import faulthandler, os, sys
faulthandler.enable()       # as many embedding programs (and pytest) do
from execdriver.driver import Stdio
from execdriver.loader import load_driver
from execdriver.spec import validate_spec
driver = load_driver("native", state_root=sys.argv[1])
null = os.open(os.devnull, os.O_RDWR)
try:
    print(driver.run(sys.argv[2], validate_spec({"root": {"path": sys.argv[3]},
        "process": {"args": ["/bin/true"]}, "seccomp": {"mode": "profile", "profile": {
        "default_action": "errno", "syscalls": [{"names": ["personality"], "action": "allow"}]}}}),
        stdio=Stdio(null, null, null)).exit_code)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


# Found by this suite: a profile denying execve and exit_group made the init spin.
@pytest.mark.root
def test_profile_denying_exec_fails_the_run_instead_of_hanging(busybox_rootfs: Path,
                                                              tmp_path: Path) -> None:
    root, cid = str(tmp_path / "state"), new_id("deny")
    p = subprocess.Popen([sys.executable, "-c", EMBEDDED_RUN, root, cid, str(busybox_rootfs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, _err = p.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        out = None
    finally:
        cli(root, "terminate", "--force", cid)       # the spinning init dies with its cgroup
        if p.poll() is None:
            p.kill()
        p.communicate()
    assert out is not None, "driver.run() hung with a profile that denies execve and exit_group"
    assert out.strip() not in ("0", ""), out
