"""Build the compiled front (client.c): this environment's ``execdriver`` and
``execdriver-oci`` commands.

The package build does it (setup.py's build_scripts: the two commands in a wheel's
scripts are this binary, or pip-style Python scripts where no C compiler is found).
``python -m execdriver.cli.client_build`` rebuilds it in place, e.g. after warm's
tables changed, and ``--uninstall`` puts Python scripts back. Without a running
``execdriver server`` the client execs ``python -m execdriver`` (or
``execdriver.cli.oci``) with the same argv, pid and fds, so the commands behave as
Python scripts would; with one, they start ~25 ms sooner. Which command lines it
hands to the server comes from warm.CLASSIFICATION, compiled in (a stale table only
costs speed: the server checks again).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from ..kernel.waiter import compile_c
from . import warm

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client.c")
COMMANDS = {"execdriver": "execdriver.cli.main", "execdriver-oci": "execdriver.cli.oci"}


# warm.CLASSIFICATION's programs, by the prefix client.c names their tables with
TABLES = {"execdriver": "EXECDRIVER", "execdriver-oci": "OCI"}


def classification_defines() -> dict[str, object]:
    """warm's protocol, timeout and classification tables, for client.c: it then
    decides as warm.servable() does, from the very same table."""
    out: dict[str, object] = {"PROTOCOL": warm.PROTOCOL, "TIMEOUT": float(warm.TIMEOUT),
                              "AUTOSTART_IDLE": float(warm.AUTOSTART_IDLE)}
    for prog, prefix in TABLES.items():
        served, values, flags, bare = warm.CLASSIFICATION[prog]
        for name, words in (("SERVED", served), ("FORKED", warm.FORKED[prog]),
                            ("VALUES", values), ("FLAGS", flags)):
            assert all(w and " " not in w and w.isascii() for w in words), words
            out[f"{prefix}_{name}"] = " ".join(sorted(words))
        out[f"{prefix}_BARE"] = int(bare)
    return out


def build(dest: str) -> str:
    """Compile client.c into ``dest`` with warm's protocol and tables, and this
    interpreter as the last resort (it finds the one beside it first)."""
    defines = {"PYTHON": sys.executable, "PYNAME": f"python{sys.version_info[0]}.{sys.version_info[1]}",
               "SOCKET_DIR": warm.SOCKET_DIR, **classification_defines()}
    return compile_c(SOURCE, dest, "-Wextra", *[f"-D{k}={json.dumps(v)}" for k, v in defines.items()])


def build_commands(directory: str) -> list[str]:
    """The two commands in ``directory``: one build, copied (a copy finds the
    interpreter beside it; a symlink would not)."""
    first, *others = (os.path.join(directory, name) for name in COMMANDS)
    build(first)
    for other in others:
        tmp = other + ".tmp"
        shutil.copy2(first, tmp)
        os.replace(tmp, other)
    return [first, *others]


def _bin_dir() -> str:
    return os.path.dirname(os.path.abspath(sys.executable))


def uninstall() -> list[str]:
    """Back to console scripts like pip's."""
    out = []
    for name, module in COMMANDS.items():
        link = os.path.join(_bin_dir(), name)
        tmp = link + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"#!{sys.executable}\nimport sys\nfrom {module} import main\n"
                    "if __name__ == '__main__':\n    sys.exit(main())\n")
        os.chmod(tmp, 0o755)
        os.replace(tmp, link)
        out.append(link)
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--uninstall"]:
        print("\n".join(uninstall()))
    else:
        print("\n".join(build_commands(_bin_dir())))
