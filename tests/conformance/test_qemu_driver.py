"""The conformance suite against the qemu micro-VM driver (drivers/qemu).

Needs it installed (scripts/setup.sh does: pip install -e drivers/qemu), qemu-system-x86
and a guest kernel (linux-image-amd64); without them every test is skipped with the
driver's own reason. A container is a VM here: ~8 s a run under TCG. CI runs the subset
below (the verbs and the process's view, one test each; ~2 minutes);
EXECDRIVER_QEMU_FULL=1 runs the whole suite (~5 minutes).
"""

from __future__ import annotations

import os

import pytest

from execdriver.testing.conformance import DriverConformance

pytestmark = [pytest.mark.root, pytest.mark.slow]

FULL = os.environ.get("EXECDRIVER_QEMU_FULL") == "1"
#: the tests CI runs: each boots at most two VMs, and together they cover every verb
SUBSET = {
    # the ones that boot nothing
    "test_driver_name_is_entry_point_name", "test_features_are_known",
    "test_default_spec_uses_only_declared_features", "test_bad_ids_refused",
    "test_unknown_id", "test_unsupported_features_refused", "test_undeclared_verbs_refused",
    "test_bad_rootfs_refused", "test_terminate_after_interrupted_create",
    # one VM each
    "test_stdout_and_stderr", "test_stdin", "test_env_is_the_specs", "test_user_and_groups",
    "test_killed_by_signal", "test_kill_sigterm", "test_detached_exit_status_recorded",
    "test_pause_unpause", "test_stats", "test_terminate_removes_everything",
    "test_missing_command",
}


class TestQemuConformance(DriverConformance):
    driver_name = "qemu"
    wait_timeout = 120.0     # a guest boots in ~7 s under TCG; more on a loaded host

    @pytest.fixture(autouse=True)
    def _ci_subset(self, request: pytest.FixtureRequest) -> None:
        if not FULL and request.node.originalname not in SUBSET:
            pytest.skip("qemu: outside the CI subset (EXECDRIVER_QEMU_FULL=1 runs it)")
