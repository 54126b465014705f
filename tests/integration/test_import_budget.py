"""The launch and control paths import no pydantic and no stevedore: a container is
created, started, signalled, queried and deleted from a stored Config alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from execdriver.libcontainer.specconv import config_from_spec
from execdriver.spec import Spec

pytestmark = pytest.mark.root

CHILD = textwrap.dedent("""
    import json, signal, sys
    from execdriver.config import Config
    from execdriver.libcontainer import Container, StateStore
    store = StateStore(sys.argv[2])
    config = Config.from_json(open(sys.argv[1]).read())
    c = Container.create(store, "budget1", config, owner="native", detach=True,
                         wait_for_start=True)
    c = Container.load(store, "budget1")
    seen = [c.status()]
    c.start()
    seen.append(Container.load(store, "budget1").status())
    Container.load(store, "budget1").signal(signal.SIGKILL)
    c = Container.load(store, "budget1")
    c.wait(10)
    seen.append(c.status())
    seen.append(c.oci_state()["status"])
    c.destroy()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "stevedore"))
    print(json.dumps({"seen": seen, "heavy": heavy}))
""")


def test_lifecycle_from_a_stored_config_imports_no_pydantic(tmp_path: Path,
                                                           busybox_rootfs: Path) -> None:
    spec = Spec(root={"path": str(busybox_rootfs)})  # type: ignore[arg-type]
    spec.process.args = ["/bin/sleep", "100"]
    stored = tmp_path / "config.json"
    stored.write_text(config_from_spec(spec).to_json())
    root = tmp_path / "state"
    out = subprocess.run([sys.executable, "-c", CHILD, str(stored), str(root)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["seen"] == ["created", "running", "stopped", "stopped"]
    assert result["heavy"] == []
    assert not (root / "budget1").exists()


def test_the_child_would_see_pydantic(tmp_path: Path) -> None:
    """The check itself works: importing the spec module shows up."""
    out = subprocess.run([sys.executable, "-c", "import sys, execdriver.spec; "
                          "print('pydantic' in sys.modules)"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"
