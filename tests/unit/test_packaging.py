"""What an installed (not editable) execdriver holds: every package, and py.typed
with real re-exports, so a downstream type checker sees the public API."""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

import execdriver

REPO = Path(__file__).resolve().parents[2]


def test_every_package_of_the_tree_is_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "execdriver").rglob("__init__.py")}
    missing = found - listed
    assert not missing, f"packages missing from setup.cfg (a wheel would lack them): {missing}"
    assert (REPO / "execdriver" / "py.typed").exists()
    assert "py.typed" in cfg["options.package_data"]["execdriver"]


def test_the_type_checking_imports_are_the_export_table() -> None:
    tree = ast.parse((REPO / "execdriver" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING")
    imported = {(node.module, alias.name) for node in block.body
                if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}
    assert imported == {(mod, name) for name, mod in execdriver._EXPORTS.items()}


def test_a_downstream_type_checker_sees_the_types(tmp_path: Path) -> None:
    code = tmp_path / "user.py"
    code.write_text("import execdriver\n"
                    "driver = execdriver.load_driver('native')\n"
                    "reveal_type(driver)\n"
                    "reveal_type(execdriver.validate_spec({}))\n")
    mypy = Path(sys.executable).with_name("mypy")
    # (the editable install's import hook is invisible to mypy: point it at the tree)
    env = {**os.environ, "MYPYPATH": str(REPO)}
    r = subprocess.run([str(mypy), "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                        str(code)], capture_output=True, text=True, cwd=tmp_path, check=False,
                       timeout=300, env=env)
    assert 'Revealed type is "execdriver.driver.ExecDriver"' in r.stdout, r.stdout + r.stderr
    assert 'Revealed type is "execdriver.spec.Spec"' in r.stdout, r.stdout + r.stderr
