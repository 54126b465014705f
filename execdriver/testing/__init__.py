"""Testing support for execdriver drivers, ours and third parties'.

- ``execdriver.testing.conformance.DriverConformance``: the reusable conformance
  suite; subclass it and set ``driver_name``.
- ``execdriver.testing.plugin``: the pytest plugin with the ``conformance_*``
  fixtures (opt-in: ``pytest_plugins = ["execdriver.testing.plugin"]``).
- ``execdriver.testing.helpers`` / ``.requests``: building blocks for a driver's
  own tests (make_spec, Output, wait_until, request_feature, ...).

Nothing is imported here, so loading the plugin stays cheap.
"""
