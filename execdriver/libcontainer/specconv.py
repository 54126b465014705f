"""Spec -> Config: the one translation from the validated spec to plain data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Config, RootMode, decode

if TYPE_CHECKING:
    from ..spec import Spec


def config_from_spec(spec: Spec, *, root_mode: RootMode = RootMode.PIVOT,
                     cgroup_name: str | None = None, caller_reaps: bool = False,
                     bundle: str | None = None) -> Config:
    """The Config of a validated ``spec`` (the caller validated it: check_spec)."""
    data: dict[str, Any] = spec.model_dump()
    data.pop("version", None)       # the spec format's version, not the Config's
    cfg: Config = decode(Config, data, "spec")
    return cfg.replace(root_mode=RootMode(root_mode), cgroup_name=cgroup_name,
                       caller_reaps=caller_reaps, bundle=bundle)
