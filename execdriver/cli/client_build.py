"""Build the compiled front (client.c) and install it as this environment's
``execdriver`` and ``execdriver-oci`` commands.

``python -m execdriver.cli.client_build`` (scripts/setup.sh runs it) compiles
client.c into <prefix>/libexec/execdriver/execdriver-client and points the two
commands in the interpreter's bin directory at it. Without a running ``execdriver
server`` the client execs ``python -m execdriver`` (or ``execdriver.cli.oci``) with
the same argv, pid and fds, so the commands behave as the console scripts pip
wrote; with one, they start ~25 ms sooner. Which command lines it hands to the
server comes from warm.CLASSIFICATION, compiled in (rebuild after changing it; a
stale table only costs speed: the server checks again). ``--uninstall`` puts
pip's scripts back.
"""

from __future__ import annotations

import json
import os
import sys

from ..kernel.waiter import compile_c
from . import warm

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client.c")
COMMANDS = {"execdriver": "execdriver.cli.main", "execdriver-oci": "execdriver.cli.oci"}


def binary_path() -> str:
    return os.path.join(sys.prefix, "libexec", "execdriver", "execdriver-client")


# warm.CLASSIFICATION's programs, by the prefix client.c names their tables with
TABLES = {"execdriver": "EXECDRIVER", "execdriver-oci": "OCI"}


def classification_defines() -> dict[str, object]:
    """warm's protocol, timeout and classification tables, for client.c: it then
    decides as warm.servable() does, from the very same table."""
    out: dict[str, object] = {"PROTOCOL": warm.PROTOCOL, "TIMEOUT": float(warm.TIMEOUT)}
    for prog, prefix in TABLES.items():
        served, values, flags, bare = warm.CLASSIFICATION[prog]
        for name, words in (("SERVED", served), ("VALUES", values), ("FLAGS", flags)):
            assert all(w and " " not in w and w.isascii() for w in words), words
            out[f"{prefix}_{name}"] = " ".join(sorted(words))
        out[f"{prefix}_BARE"] = int(bare)
    return out


def build(dest: str | None = None) -> str:
    """Compile client.c with this interpreter, installation key, default socket and
    warm's tables."""
    saved = os.environ.pop(warm.SOCKET_ENV, None)     # the default socket, not a test's
    try:
        defines = {"PYTHON": sys.executable, "KEY": warm.install_key(),
                   "SOCKET": warm.socket_path(), **classification_defines()}
    finally:
        if saved is not None:
            os.environ[warm.SOCKET_ENV] = saved
    return compile_c(SOURCE, dest or binary_path(), "-Wextra",
                     *[f"-D{k}={json.dumps(v)}" for k, v in defines.items()])


def _bin_dir() -> str:
    return os.path.dirname(os.path.abspath(sys.executable))


def install(binary: str) -> list[str]:
    """Point bin/execdriver and bin/execdriver-oci at ``binary`` (atomic renames)."""
    out = []
    for name in COMMANDS:
        link = os.path.join(_bin_dir(), name)
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.relpath(binary, _bin_dir()), tmp)
        os.replace(tmp, link)
        out.append(link)
    return out


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
        print("\n".join(install(build())))
