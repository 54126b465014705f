"""Fuzzing the OCI front end's inputs: config.json, process.json, update --resources.

- 1000 generated config.json objects (plausible runtime-spec fields mixed with
  junk) through ``execdriver.oci.config.convert``: a Converted or a SpecError,
  never another exception; a converted spec survives the state store's JSON
  round trip and the native driver's ``check_spec`` (ExecDriverError or nothing).
- 300 process objects (``exec --process``) through ``convert_process``.
- 200 ``update --resources`` objects through ``resource_changes``.
- 200 config.json files of random bytes / JSON through ``load_bundle``.
- 6 valid configs (runc's default, varied) converted and really run (native).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import fuzz_strategies as fz
import pytest
from hardening_helpers import assert_clean, kill_marked, new_id
from hypothesis import given, note
from hypothesis import strategies as st

from execdriver.errors import ExecDriverError, SpecError

STATS = fz.Outcomes()
report_counts = STATS.report_fixture("OCI")
_count = STATS.count


def _typed(fn: Any, *args: Any, what: str) -> Any:
    """fn(*args), or None when it refused with a typed error (any other exception fails)."""
    try:
        out = fn(*args)
    except ExecDriverError as exc:
        assert str(exc).strip(), f"{what}: empty error message"
        _count(f"{what}: refused")
        return None
    _count(f"{what}: accepted")
    return out


def _native() -> Any:
    from execdriver.loader import load_driver
    return load_driver("native", state_root="/nonexistent-fuzz-root", check_available=False)


NATIVE = _native()


@fz.fuzz_settings(1000)
@given(config=fz.oci_configs)
def test_fuzzed_configs_convert_or_fail_typed(config: Any) -> None:
    from execdriver.oci.config import convert
    from execdriver.spec import Spec
    conv = _typed(convert, config, "/bundle", what="convert")
    if conv is None:
        return
    spec = conv.spec
    assert Spec.model_validate_json(spec.model_dump_json()) == spec
    try:
        NATIVE.check_spec(spec)
    except ExecDriverError as exc:
        note(str(exc))


@fz.fuzz_settings(300)
@given(proc=st.one_of(fz.oci_process, fz.junk))
def test_fuzzed_exec_process_objects_fail_typed(proc: Any) -> None:
    from pydantic import ValidationError

    from execdriver.oci.config import convert_process
    from execdriver.spec import Process, problems_from
    if not isinstance(proc, dict):
        return          # the CLI refuses a non-object before it gets here
    out = _typed(convert_process, proc, what="process")
    if out is not None:
        try:
            Process.model_validate(out)
        except ValidationError as exc:
            assert problems_from(exc)


@fz.fuzz_settings(200)
@given(res=st.one_of(fz.oci_resources, fz.junk),
       flags=st.fixed_dictionaries({}, optional={"memory": fz.sizes.map(str),
                                                 "cpu_quota": st.sampled_from(["1000", "-1", "x"]),
                                                 "pids_limit": st.sampled_from(["0", "10", "-5"])}))
def test_fuzzed_update_resources_fail_typed(res: Any, flags: dict[str, Any]) -> None:
    from execdriver.oci.queries import resource_changes
    _typed(resource_changes, res, flags, what="update")


@fz.fuzz_settings(200)
@given(content=st.one_of(st.binary(max_size=200), fz.junk.map(lambda v: json.dumps(v).encode()),
                         fz.oci_configs.map(lambda v: json.dumps(v).encode())))
def test_fuzzed_config_files_load_or_fail_typed(content: bytes, tmp_path_factory: Any) -> None:
    from execdriver.oci.config import load_bundle
    bundle = tmp_path_factory.mktemp("bundle")
    (bundle / "config.json").write_bytes(content)
    _typed(load_bundle, str(bundle), what="load_bundle")


# --- a sample really run -------------------------------------------------------------------------

@st.composite
def runnable_configs(draw: Any) -> tuple[dict[str, Any], int]:
    from execdriver.oci.queries import default_config
    code = draw(st.integers(0, 3))
    config = default_config()
    proc = config["process"]
    proc["args"] = ["/bin/sh", "-c", f"exit {code}"]
    proc["env"] += draw(st.lists(st.sampled_from(["A=1", "B=two", "EMPTY="]), unique=True))
    proc["cwd"] = draw(st.sampled_from(["/", "/tmp", "/etc"]))
    proc["user"] = draw(st.sampled_from([{"uid": 0, "gid": 0},
                                         {"uid": 1000, "gid": 1000, "additionalGids": [10]}]))
    proc["noNewPrivileges"] = draw(st.booleans())
    proc["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": draw(st.integers(64, 1024)), "hard": 1024}]
    config["root"]["readonly"] = draw(st.booleans())
    config["linux"]["resources"].update(draw(st.sampled_from([
        {}, {"memory": {"limit": 64 << 20}}, {"pids": {"limit": 50}},
        {"cpu": {"shares": 256, "quota": 50000, "period": 100000}}])))
    if draw(st.booleans()):
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["keyctl", "add_key", "not_a_syscall"], "action": "SCMP_ACT_ERRNO"}]}
    return config, code


@pytest.mark.root
@fz.fuzz_settings(6)
@given(case=runnable_configs())
def test_sample_of_valid_configs_really_runs(case: tuple[dict[str, Any], int], busybox_rootfs: Path,
                                             tmp_path_factory: Any) -> None:
    from execdriver.driver import Stdio
    from execdriver.loader import load_driver
    from execdriver.oci.config import convert
    config, code = case
    config["root"]["path"] = str(busybox_rootfs)
    marker = new_id("m")
    config["process"]["env"].append(f"EDHARD={marker}")
    spec = convert(config, "/bundle").spec
    root = tmp_path_factory.mktemp("ocirun") / "state"
    driver = load_driver("native", state_root=root)
    cid = new_id("oci")
    null = os.open(os.devnull, os.O_RDWR)
    try:
        status = driver.run(cid, spec, stdio=Stdio(null, null, null))
        assert status.exit_code == code, f"exit {status.exit_code}, want {code}"
        _count("run: ok")
    finally:
        os.close(null)
        kill_marked(marker)
    assert_clean(root, cid, marker, busybox_rootfs)


# --- bugs the fuzz found (fixed; kept as regression tests) -----------------------------------------

BASE = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["sh"]}}


def _with(path: str, value: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(BASE))
    node = config
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return config


# config.py called list()/set() on values it never type-checked: a TypeError traceback
@pytest.mark.parametrize("path,value,field", [
    ("process.user.additionalGids", 5, "process.user.additionalGids"),
    ("process.capabilities.bounding", 5, "process.capabilities.bounding"),
    ("process.capabilities.inheritable", [{}], "process.capabilities.inheritable"),
    ("hooks.prestart", [{"path": "/bin/true", "args": 5}], "hooks.prestart[0].args"),
    ("hooks.poststop", [{"path": "/bin/true", "env": 1}], "hooks.poststop[0].env"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": [["read"]], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["read"], "action": {}}]},
     "linux.seccomp.syscalls[0].action"),
    ("linux.seccomp", {"defaultAction": ["SCMP_ACT_ALLOW"]}, "linux.seccomp.defaultAction"),
    ("process.consoleSize", 5, "process.consoleSize"),
    ("process.consoleSize", {"height": "x"}, "process.consoleSize.height"),
    ("linux.sysctl", {"kernel.shmmax": {}}, "linux.sysctl.kernel.shmmax"),
], ids=["additionalGids", "bounding-int", "inheritable-dict", "hook-args", "hook-env",
        "seccomp-name", "seccomp-action", "seccomp-default-action", "console-int",
        "console-height", "sysctl-value"])
def test_wrongly_typed_config_fields_are_a_spec_error(path: str, value: Any, field: str) -> None:
    from execdriver.oci.config import convert
    with pytest.raises(SpecError) as info:
        convert(_with(path, value), "/bundle")
    assert any(line.startswith(field + ":") for line in info.value.problems), info.value.problems
