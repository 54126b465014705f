"""The OCI runtime front end: a runc-compatible command line over the native driver.

``execdriver-oci`` lets podman, containerd (and through them Kubernetes) run
containers with execdriver's native driver. Modules:

- ``cli``       argument parsing, dispatch, runc-style errors and exit codes
- ``log``       runc-style log lines (``--log``, ``--log-format text|json``)
- ``state``     the OCI state JSON and the fast paths (no pydantic): state, start, kill, delete
- ``config``    config.json (runtime-spec 1.x) -> execdriver Spec, naming every unsupported field
- ``hooks``     OCI hooks with the state JSON on stdin
- ``lifecycle`` create, run, exec, delete and the other verbs that need the driver
- ``queries``   list, ps, events, features, spec, update
"""

from __future__ import annotations

TYPE_CHECKING = False       # (typing costs ~2 ms on every execdriver-oci start; mypy: True)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Set by the console script (execdriver.cli.oci) to warm.prepare_bundle: create asks a
#: running server to translate config.json (the front end may not import the CLI).
remote_prepare: Callable[[str, int, bool], dict[str, Any] | None] | None = None
