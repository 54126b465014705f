"""The CLI's container table (cli.containers.collect_infos) when a driver's list()
fails: each of its containers is asked alone, not all marked unknown (root)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import execdriver.loader
from execdriver.cli.containers import collect_infos
from execdriver.errors import ExecDriverError
from execdriver.spec import Spec

pytestmark = pytest.mark.root


def test_a_failing_list_falls_back_to_info_per_container(busybox_rootfs: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path / "state")
    real = execdriver.loader.load_driver("native", root)
    spec = Spec.model_validate({"root": {"path": str(busybox_rootfs)},
                                "process": {"args": ["/bin/sleep", "100"]}})
    ids = ["ci-a", "ci-b"]
    try:
        for cid in ids:
            real.start(cid, spec, detach=True)

        def list_fails() -> Any:
            raise ExecDriverError("list: the state root could not be read")
        broken = execdriver.loader.load_driver("native", root)
        monkeypatch.setattr(broken, "list", list_fails)
        monkeypatch.setattr(execdriver.loader, "load_driver", lambda *a, **k: broken)
        rows = {r["id"]: r for r in collect_infos(root)}
        assert {cid: rows[cid]["status"] for cid in ids} == dict.fromkeys(ids, "running")
        assert all(rows[cid]["pid"] for cid in ids)
    finally:
        for cid in ids:
            try:
                real.terminate(cid)
            except ExecDriverError:
                pass
