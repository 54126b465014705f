"""The conformance suite against the systemd-nspawn driver (drivers/nspawn).

Needs it installed (scripts/setup.sh does: pip install -e drivers/nspawn) and
systemd-nspawn (Debian's systemd-container); without it every test is skipped
with the driver's own reason.
"""

import pytest

from execdriver.testing.conformance import DriverConformance

pytestmark = pytest.mark.root


class TestNspawnConformance(DriverConformance):
    driver_name = "nspawn"
