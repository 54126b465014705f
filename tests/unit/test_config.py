"""Config: the plain-data form of a spec (JSON round trip, typed decoding, RootMode)."""

from __future__ import annotations

import json

import pytest

from execdriver.config import Config, RootMode
from execdriver.libcontainer.specconv import config_from_spec
from execdriver.spec import Hook, Spec


def _spec() -> Spec:
    spec = Spec(root={"path": "/srv/rootfs"})  # type: ignore[arg-type]
    spec.process.env = {"A": "1", "B": "2"}
    spec.sysctls = {"net.ipv4.ip_forward": "1"}
    spec.hooks.poststop.append(Hook(path="/bin/true"))
    return spec


def test_spec_to_config_keeps_every_field() -> None:
    cfg = config_from_spec(_spec(), root_mode=RootMode.CHROOT, cgroup_name="a/b", bundle="/b")
    assert cfg.process.env[-2:] == (("A", "1"), ("B", "2"))
    assert cfg.sysctls == (("net.ipv4.ip_forward", "1"),)
    assert cfg.root_mode is RootMode.CHROOT and cfg.cgroup_name == "a/b" and cfg.bundle == "/b"
    assert cfg.hook_steps() == ("poststop",)
    assert cfg.hooks_of("poststop")[0].path == "/bin/true"
    assert cfg.namespace_types() == _spec().namespace_types()


def test_json_round_trip_and_hashable() -> None:
    cfg = config_from_spec(_spec())
    again = Config.from_json(cfg.to_json())
    assert again == cfg and hash(again) == hash(cfg)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(root_mode="bogus"), "config.root_mode: 'bogus' is not one of"),
    (lambda d: d["process"].update(uid=0), "config.process: unknown field uid"),
    (lambda d: d["process"]["user"].update(uid="0"), "config.process.user.uid: want an integer"),
    (lambda d: d["process"].update(args="sh"), "config.process.args: want a list"),
    (lambda d: d["root"].update(readonly=1), "config.root.readonly: want true or false"),
    (lambda d: d.pop("root"), "config: .*missing 1 required"),
])
def test_decoding_names_the_bad_field(change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(config_from_spec(_spec()).to_json())
    change(data)
    with pytest.raises(ValueError, match=message):
        Config.from_dict(data)


def test_root_mode_refuses_unknown_values() -> None:
    with pytest.raises(ValueError):
        RootMode("pivot-ish")
