"""What a rootless container is made of, decided before anything runs: the id maps
from /etc/subuid, the Config's user namespace, the OCI rootless spec, the state root,
the limits that would need a cgroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execdriver.config import (
    Config,
    IDMapping,
    MemoryResources,
    Namespace,
    Network,
    Resources,
    Root,
)
from execdriver.errors import InvalidArgument, StepFailed
from execdriver.kernel import idmap
from execdriver.kernel.cgroups.none import NoCgroupManager, requested_limits
from execdriver.libcontainer import rootless
from execdriver.oci.queries import default_config
from execdriver.userroot import user_root


def test_subordinate_ranges_by_name_or_number(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n# no\nbob:165536:65536\n1001:231072:10\nalice:300000:5\n"
                 "carol:x:1\n")
    assert idmap.subordinate_ranges(str(f), 1000, "alice") == [(100000, 65536), (300000, 5)]
    assert idmap.subordinate_ranges(str(f), 1001, "nobody") == [(231072, 10)]
    assert idmap.subordinate_ranges(str(f), 1002, "carol") == []
    assert idmap.subordinate_ranges(str(tmp_path / "missing"), 0, "root") == []


def test_default_maps_add_the_first_range_only_with_both_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("u:100000:65536\n")
    monkeypatch.setattr(idmap, "SUBUID", str(subuid))
    monkeypatch.setattr(idmap, "SUBGID", str(subgid))
    monkeypatch.setattr(idmap, "HELPERS", ("/bin/true", "/bin/true"))
    assert idmap.default_maps(1000, 1000, "u") == ([(0, 1000, 1)], [(0, 1000, 1)])
    subgid.write_text("u:200000:100\n")
    assert idmap.default_maps(1000, 1001, "u") == (
        [(0, 1000, 1), (1, 100000, 65536)], [(0, 1001, 1), (1, 200000, 100)])
    monkeypatch.setattr(idmap, "HELPERS", ("/nonexistent/newuidmap", "/bin/true"))
    assert idmap.default_maps(1000, 1001, "u") == ([(0, 1000, 1)], [(0, 1001, 1)])


def test_parse_reads_a_proc_map() -> None:
    assert idmap.parse("0 1000 1\n 1 100000 65536\n\n") == [(0, 1000, 1), (1, 100000, 65536)]


def test_adapt_adds_a_user_namespace_and_keeps_given_maps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    base = Config(root=Root(path="/r"), namespaces=(Namespace("pid"), Namespace("mount")))
    adapted = rootless.adapt(base)
    assert "user" in adapted.namespace_types()
    assert adapted.uid_mappings[0] == IDMapping(0, 4242, 1)
    given = (IDMapping(0, 5000, 1),)
    kept = rootless.adapt(base.replace(namespaces=(*base.namespaces, Namespace("user")),
                                       uid_mappings=given, gid_mappings=given))
    assert kept.uid_mappings == given and kept.gid_mappings == given
    assert [n.type for n in kept.namespaces].count("user") == 1


def test_root_in_a_user_namespace_keeps_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rootless podman's runtime is root in podman's user namespace: no other one."""
    base = Config(root=Root(path="/r"), namespaces=(Namespace("pid"),))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert rootless.adapt(base) == base


def test_adapt_refuses_a_veth_network_by_name() -> None:
    with pytest.raises(InvalidArgument, match="network 'bridge': a rootless container can only"):
        rootless.adapt(Config(root=Root(path="/r"), network=Network(mode="bridge")))


def test_limits_are_named_and_refused_without_a_cgroup() -> None:
    assert requested_limits(Resources()) == []
    asked = Resources(memory=MemoryResources(limit=1 << 25))
    assert requested_limits(asked) == ["memory.limit"]
    cg = NoCgroupManager("x/y", "because")
    cg.apply(Resources())
    with pytest.raises(StepFailed, match=r"cannot apply memory.limit: .*\(because\)"):
        cg.apply(asked)
    with pytest.raises(StepFailed, match="no cgroup"):
        cg.freeze()
    assert cg.record() == {"version": 0, "name": "x/y", "why": "because"}
    assert NoCgroupManager.from_record(cg.record()).why == "because"
    assert cg.pids() == [] and cg.directories() == [] and not cg.exists()


def test_the_rootless_oci_spec_is_runcs() -> None:
    plain, spec = default_config(), default_config(rootless=True)
    types = [n["type"] for n in spec["linux"]["namespaces"]]
    assert "network" not in types and types.count("user") == 1
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(),
                                             "size": 1}]
    assert "resources" not in spec["linux"] and "resources" in plain["linux"]
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sys_mount["type"] == "none" and "rbind" in sys_mount["options"]
    assert not any(o.startswith("gid=") for m in spec["mounts"] for o in m.get("options", []))


def test_a_users_state_root_is_its_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert user_root("/run/execdriver") == "/run/execdriver"
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    assert user_root("/run/execdriver-oci") == "/run/user/4242/execdriver-oci"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert user_root("/run/execdriver") == "/run/execdriver"   # no runtime dir of its own


def test_root_in_a_user_namespace_uses_its_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """runc's rule: root in a user namespace honours $XDG_RUNTIME_DIR unless USER=root."""
    import execdriver.userroot as userroot
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.setattr(userroot, "_running_in_userns", lambda: True)
    assert user_root("/run/execdriver-oci") == "/run/user/1000/execdriver-oci"
    monkeypatch.setenv("USER", "root")
    assert user_root("/run/execdriver-oci") == "/run/execdriver-oci"
    monkeypatch.delenv("USER")
    monkeypatch.setattr(userroot, "_running_in_userns", lambda: False)
    assert user_root("/run/execdriver-oci") == "/run/execdriver-oci"


@pytest.mark.parametrize(("arg", "loopback"), [("slirp4netns", False),
                                               ("slirp4netns:allow_host_loopback=true", True)])
def test_the_slirp4netns_network_flag(arg: str, loopback: bool) -> None:
    from execdriver.cli.overrides import apply_network
    data: dict[str, object] = {"network": {"mode": "host"}, "namespaces": []}
    problems: list[str] = []
    apply_network(data, arg, problems)
    assert problems == []
    assert data["network"] == {"mode": "slirp4netns", "host_loopback": loopback}
    assert data["namespaces"] == [{"type": "network", "path": None}]
    apply_network(data, "slirp4netns:bogus", problems)
    assert problems and "slirp4netns[:allow_host_loopback=true]" in problems[0]
