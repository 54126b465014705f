"""The spec -> systemd-nspawn command line translation (pure, no root)."""

from __future__ import annotations

from execdriver.spec import Rlimit, Spec
from execdriver_nspawn.translate import SHIM, nspawn_argv, refusals


def _spec(**changes: object) -> Spec:
    from execdriver_nspawn.driver import NspawnDriver
    spec = NspawnDriver.__new__(NspawnDriver).default_spec("/r", ["/bin/true"])
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def test_default_spec_translates_and_is_not_refused() -> None:
    spec = _spec(hostname="box")
    assert refusals(spec) == []
    argv = nspawn_argv(spec, nspawn="N", busybox="B", machine="m")
    assert argv[:2] == ["N", "--quiet"]
    for flag in ("--directory=/r", "--chdir=/", "--hostname=box", "--private-network",
                 "--no-new-privileges=yes", f"--bind-ro=B:{SHIM}"):
        assert flag in argv
    assert argv[-2:] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         "/bin/true"]


def test_mounts_rlimits_and_readonly() -> None:
    spec = _spec()
    spec.root.readonly = True
    spec.process.rlimits = [{"type": "nofile", "soft": 512, "hard": 1024}]  # type: ignore[list-item]
    spec = Spec.model_validate(spec.model_dump() | {"mounts": spec.model_dump()["mounts"] + [
        {"destination": "/mnt/b", "type": "bind", "source": "/a:b", "options": ["ro"]},
        {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}]})
    argv = nspawn_argv(spec, nspawn="N", busybox="B", machine="m")
    assert "--read-only" in argv
    assert "--rlimit=RLIMIT_NOFILE=512:1024" in argv
    assert "--bind-ro=/a\\:b:/mnt/b" in argv
    assert "--tmpfs=/mnt/t:size=1m" in argv


def test_refusals_name_the_field() -> None:
    spec = _spec()
    spec.process.umask = 0o027
    spec.namespaces = [n for n in spec.namespaces if n.type != "ipc"]
    got = refusals(spec)
    assert any(r.startswith("process.umask:") for r in got)
    assert any(r.startswith("namespaces:") and "ipc" in r for r in got)


def test_exec_config_carries_the_process_privileges() -> None:
    from execdriver_nspawn.translate import exec_config
    p = _spec().process.model_copy(deep=True)
    p.args, p.env, p.cwd = ["/bin/id"], {"A": "1"}, "/tmp"
    p.user.uid, p.user.gid, p.user.additional_gids = 5, 6, [7]
    p.capabilities.bounding = p.capabilities.effective = p.capabilities.permitted = ["CAP_KILL"]
    p.rlimits = [Rlimit(type="nofile", soft=10, hard=20)]
    cfg = exec_config(p)
    assert cfg["args"] == ["/bin/id"] and cfg["env"] == {"A": "1"} and cfg["cwd"] == "/tmp"
    assert (cfg["uid"], cfg["gid"], cfg["additional_gids"]) == (5, 6, [7])
    assert cfg["capabilities"] == {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                   "permitted": ["CAP_KILL"], "inheritable": [], "ambient": []}
    assert cfg["rlimits"] == [["RLIMIT_NOFILE", 10, 20]]
    assert cfg["no_new_privileges"] is True and cfg["umask"] == 0o022
