"""A base for drivers that keep their containers in the driver's state store and run each
under a process of their own (see execdriver.monitoring): what such drivers otherwise
each write again.

``RecordedDriver.start`` validates the id and the spec, checks the rootfs, claims the id
in the state store, calls the driver's ``launch`` and, if that fails, terminates what it
made. ``info``, the status (the monitor's record, else the driver's ``live_status``) and
the guards of the other verbs (``record``, ``in_status``) come from the records::

    class MyDriver(RecordedDriver):
        name = "mine"
        features = frozenset({...})

        def launch(self, cid, spec, rootfs, stdio, detach):
            ...                             # start it; return a Handle

        def live_status(self, st):          # a live container: running or paused?
            return Status.PAUSED if paused(st) else Status.RUNNING
"""

from __future__ import annotations

import abc
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .driver import ContainerInfo, ExecDriver, ExitStatus, Handle, Status, Stdio
from .errors import InvalidArgument, InvalidState, StepFailed, UnsupportedFeature

if TYPE_CHECKING:
    from .spec import Spec
    from .state import ContainerState

__all__ = ["RecordedDriver"]


class RecordedDriver(ExecDriver):
    """An ExecDriver whose containers are records in ``self.state`` (see the module)."""

    # -- what a driver provides ----------------------------------------------------------
    @abc.abstractmethod
    def launch(self, container_id: str, spec: Spec, rootfs: Path, stdio: Stdio | None,
               detach: bool) -> Handle:
        """Start the container whose id ``start`` has claimed (``rootfs``: its absolute
        path). On an exception ``start`` terminates it, so record what to clean up first."""

    def stop(self, st: ContainerState) -> None:
        """terminate's first step: end the container's processes (the monitor's go next)."""

    def clean_up(self, st: ContainerState) -> None:
        """terminate's last step before the record goes: remove what the container made."""

    def live_status(self, st: ContainerState) -> Status:
        """The status of a container whose process lives (the record decides the rest)."""
        return Status.RUNNING

    def refusals(self, spec: Spec) -> list[str]:
        """What of ``spec`` this driver cannot do beyond its feature set, one line each."""
        return []

    def record_fields(self, container_id: str) -> dict[str, Any]:
        """More fields for the container's first state record (e.g. ``bundle``)."""
        return {}

    def annotations(self, st: ContainerState) -> dict[str, str]:
        """The annotations ``info`` reports."""
        return dict(st.annotations)

    # -- what it gets ------------------------------------------------------------------
    def check_spec(self, spec: Spec) -> None:
        super().check_spec(spec)
        problems = self.refusals(spec)
        if problems:
            raise UnsupportedFeature(self.name, problems)

    def start(self, container_id: str, spec: Spec, *, stdio: Stdio | None = None,
              detach: bool = False) -> Handle:
        from .state import validate_id
        validate_id(container_id)
        self.check_spec(spec)
        rootfs = Path(os.path.abspath(spec.root.path))
        if not rootfs.is_dir():
            why = "not a directory" if rootfs.exists() else "no such directory"
            raise StepFailed("rootfs", why, container_id=container_id, driver=self.name,
                             path=rootfs)
        self.state.create(container_id, self.name, spec, **self.record_fields(container_id))
        try:
            return self.launch(container_id, spec, rootfs, stdio, detach)
        except BaseException:
            with contextlib.suppress(Exception):
                self.terminate(container_id)
            raise

    def terminate(self, container_id: str) -> None:
        """Idempotent: ``stop``, the monitor stopped, ``clean_up``, the record removed."""
        from .monitoring import stop_monitor
        from .state import validate_id
        validate_id(container_id)
        if not self.state.exists(container_id):
            return                      # already gone
        st = self.record("terminate", container_id)
        self.stop(st)
        stop_monitor(st)
        self.clean_up(st)
        self.state.remove(container_id)

    def record(self, verb: str, container_id: str) -> ContainerState:
        """The container's record (ContainerNotFound; InvalidArgument if another driver's)."""
        st = self.state.read(container_id)
        if st.driver and st.driver != self.name:
            raise InvalidArgument(f"{verb} id={container_id}: container belongs to driver "
                                  f"{st.driver}", container_id=container_id, driver=self.name)
        return st

    def status_of(self, st: ContainerState) -> tuple[Status, ExitStatus | None]:
        from .monitoring import recorded_status
        decided = recorded_status(self.state, st)
        return decided if decided is not None else (self.live_status(st), None)

    def in_status(self, verb: str, container_id: str, *ok: Status) -> ContainerState:
        """The record of a container in one of the ``ok`` statuses (default: running), else
        InvalidState naming the status it is in."""
        st = self.record(verb, container_id)
        status, _ = self.status_of(st)
        if status not in (ok or (Status.RUNNING,)):
            raise InvalidState(f"{verb} id={container_id}: container is {status.value}",
                               container_id=container_id, driver=self.name, step=verb)
        return st

    def info(self, container_id: str) -> ContainerInfo:
        st = self.record("info", container_id)
        status, exit_status = self.status_of(st)
        return ContainerInfo(id=st.id, driver=self.name, status=status, pid=st.pid,
                             created=st.created, rootfs=st.rootfs, bundle=st.bundle,
                             exit_status=exit_status, annotations=self.annotations(st),
                             resources=dict(st.resources))
