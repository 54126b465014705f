"""Where a user's state lives by default: /run for root, the runtime directory of a
rootless user. Imports only os (the CLI's parser uses it for --help)."""

from __future__ import annotations

import os


def user_root(root_default: str) -> str:
    """``root_default`` (a /run directory) for root. For another user (rootless) the same
    name in the user's runtime directory, as runc and podman: $XDG_RUNTIME_DIR, else
    /run/user/UID when it is the user's; else ``root_default`` (its use then fails
    with the path named)."""
    uid = os.geteuid()
    # Root in a user namespace (rootless podman runs its runtime so) is rootless too,
    # unless it says it is root (USER=root): runc's rule.
    if uid == 0 and (os.environ.get("USER") == "root" or not _running_in_userns()):
        return root_default
    name = os.path.basename(root_default)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, name)
    run_user = f"/run/user/{uid}"
    try:
        if os.stat(run_user).st_uid == uid:
            return os.path.join(run_user, name)
    except OSError:
        pass
    return root_default


def _running_in_userns() -> bool:
    # (procstat imports only os: every command starts here)
    from .kernel.procstat import running_in_userns
    return running_in_userns()
