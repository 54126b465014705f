"""The JSON execdriver-oci reads from its user (config.json, exec --process, update
--resources) is bounded: too large or too deeply nested is a typed one-line error,
found before the whole file is read or parsed (no RecursionError, bounded memory)."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from execdriver.errors import ExecDriverError, SpecError
from execdriver.oci import config
from execdriver.oci.cli import main
from execdriver.oci.config import load_bundle
from execdriver.oci.lifecycle import ExecOptions, exec_process
from execdriver.oci.queries import default_config

DEEP = 200_000


def write_config(bundle: Path, text: str | bytes) -> None:
    bundle.mkdir(exist_ok=True)
    path = bundle / "config.json"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


def test_limits_are_sane() -> None:
    # room for the largest legitimate config: args + env as large as execve takes
    # (6 MiB at most) plus mounts, seccomp and annotations; nesting far below
    # Python's recursion limit and far above any runtime-spec object (about 8 deep)
    assert 6 << 20 < config.MAX_JSON_BYTES <= 64 << 20
    assert 16 <= config.MAX_JSON_DEPTH <= 512


@pytest.mark.parametrize("brackets", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_deep_config_is_a_typed_error(tmp_path: Path, brackets: tuple[str, str]) -> None:
    write_config(tmp_path, deep(DEEP, *brackets))
    with pytest.raises(SpecError) as info:
        load_bundle(str(tmp_path))
    assert info.value.problems == [
        f"{tmp_path}/config.json: nesting deeper than {config.MAX_JSON_DEPTH} levels"]


def test_depth_at_the_limit_is_fine_and_one_more_is_not() -> None:
    assert config.parse_json(deep(config.MAX_JSON_DEPTH).encode(), "x") == \
        json.loads(deep(config.MAX_JSON_DEPTH))
    with pytest.raises(ExecDriverError, match=r"^x: nesting deeper than"):
        config.parse_json(deep(config.MAX_JSON_DEPTH + 1).encode(), "x")


def test_brackets_in_strings_do_not_nest(tmp_path: Path) -> None:
    cfg = default_config()
    cfg["root"]["path"] = "/rootfs"
    cfg["annotations"] = {"a": "[" * 5000, "b": '\\"{' * 5000, "c": "}" * 10}
    write_config(tmp_path, json.dumps(cfg))
    assert load_bundle(str(tmp_path)).spec.annotations["a"] == "[" * 5000


def test_huge_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "config.json"
    with open(path, "wb") as f:
        f.truncate(1 << 30)               # sparse: reading it all would take 1 GiB
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(SpecError) as info:
            load_bundle(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.problems == [f"{path}: larger than {config.MAX_JSON_BYTES >> 20} MiB"]
    assert peak < 1 << 20 and time.monotonic() - t0 < 5


def test_unbounded_stream_is_cut_at_the_limit(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    os.symlink("/dev/zero", tmp_path / "config.json")     # st_size 0, never ends
    with pytest.raises(SpecError, match=f"larger than {config.MAX_JSON_BYTES >> 20} MiB"):
        load_bundle(str(tmp_path))


def test_a_100mb_annotation_is_refused_as_too_large(tmp_path: Path) -> None:
    cfg = default_config()
    cfg["annotations"] = {"big": "x" * (100 << 20)}
    write_config(tmp_path, json.dumps(cfg))
    with pytest.raises(SpecError, match=r"config\.json: larger than"):
        load_bundle(str(tmp_path))


def test_read_json_other_errors(tmp_path: Path) -> None:
    with pytest.raises(ExecDriverError, match=r"^what: no such file$"):
        config.read_json(str(tmp_path / "missing"), "what")
    (tmp_path / "bad").write_text("{nope")
    with pytest.raises(ExecDriverError, match=r"^what: not JSON \(.* at line 1\)$"):
        config.read_json(str(tmp_path / "bad"), "what")
    (tmp_path / "bad").write_bytes(b'"\xff"')
    with pytest.raises(ExecDriverError, match=r"^what: not JSON"):
        config.read_json(str(tmp_path / "bad"), "what")
    with pytest.raises(ExecDriverError, match=r"^what: .*directory"):
        config.read_json(str(tmp_path), "what")
    (tmp_path / "bad").write_text("[" + "9" * 5000 + "]")    # past int's 4300 digits
    with pytest.raises(ExecDriverError, match=r"^what: not JSON \(Exceeds the limit"):
        config.read_json(str(tmp_path / "bad"), "what")


def exec_opts(tmp_path: Path, text: str, **kw: Any) -> ExecOptions:
    process = tmp_path / "process.json"
    process.write_text(text)
    return ExecOptions(command=[], process_file=str(process), **kw)


def test_deep_process_json_is_a_typed_error(tmp_path: Path) -> None:
    opts = exec_opts(tmp_path, deep(DEEP))
    with pytest.raises(ExecDriverError, match=f"^exec --process {tmp_path}/process.json: "
                                              f"nesting deeper than {config.MAX_JSON_DEPTH} levels$"):
        exec_process(None, "c1", opts)


@pytest.mark.parametrize("proc, why", [
    ({"args": ["true"], "cwd": "rel"}, "cwd: must be an absolute path"),
    ({"args": ["true"], "cwd": 5}, "cwd: "),
    ({"args": ["true"], "env": ["NOEQ"]}, "process.env[0]: 'NOEQ' is not KEY=VALUE"),
])
def test_invalid_process_json_is_a_typed_error(tmp_path: Path, proc: dict[str, Any],
                                               why: str) -> None:
    with pytest.raises(ExecDriverError) as info:
        exec_process(None, "c1", exec_opts(tmp_path, json.dumps(proc)))
    msg = str(info.value)
    assert msg.startswith(f"exec --process {tmp_path}/process.json: ") and why in msg, msg
    assert "\n" not in msg and "pydantic" not in msg


def test_relative_exec_cwd_is_refused(tmp_path: Path) -> None:
    opts = exec_opts(tmp_path, json.dumps({"args": ["true"]}), cwd="rel/dir")
    with pytest.raises(ExecDriverError, match=r"^exec --cwd 'rel/dir': must be an absolute path$"):
        exec_process(None, "c1", opts)


def one_error(capsys: pytest.CaptureFixture[str], log: Path) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["level"], e["msg"]) for e in entries] == [("error", lines[0])]
    return lines[0]


def test_cli_create_with_a_deep_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, log = tmp_path / "b", tmp_path / "log.json"
    write_config(bundle, deep(DEEP, "{", "}"))
    code = main(["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json",
                 "create", "--bundle", str(bundle), "c1"])
    msg = one_error(capsys, log)
    assert code == 1
    assert msg == f"invalid config.json: {bundle}/config.json: nesting deeper than " \
                  f"{config.MAX_JSON_DEPTH} levels"
    assert not (tmp_path / "root" / "c1").exists()


def test_cli_update_with_deep_resources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res, log = tmp_path / "res.json", tmp_path / "log.json"
    res.write_text(deep(DEEP))
    code = main(["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json",
                 "update", "--resources", str(res), "c1"])
    assert code == 1
    assert one_error(capsys, log) == \
        f"update --resources {res}: nesting deeper than {config.MAX_JSON_DEPTH} levels"
