"""The driver conformance suite against the built-in native and chroot drivers."""

from execdriver.testing.conformance import DriverConformance


class TestNativeConformance(DriverConformance):
    driver_name = "native"


class TestChrootConformance(DriverConformance):
    driver_name = "chroot"
