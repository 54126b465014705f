"""The driver conformance suite against the built-in native and chroot drivers."""

from execdriver.testing.conformance import DriverConformance

# What the VM lane (a pure cgroup v2 kernel, emulated: ~8 s a container) runs of the
# native driver's conformance: the lifecycle through the v2 cgroup code (conftest.py
# marks them `vm`).
IN_THE_VM = ("test_exit_code_seven", "test_killed_by_signal", "test_detached_exit_status_recorded",
             "test_pause_unpause", "test_exec_exit_code", "test_stats", "test_pids",
             "test_terminate_removes_everything")


class TestNativeConformance(DriverConformance):
    driver_name = "native"


class TestChrootConformance(DriverConformance):
    driver_name = "chroot"
