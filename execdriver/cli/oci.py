"""Console script ``execdriver-oci`` (the OCI runtime front end, see execdriver.oci)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from execdriver.cli import warm
    if (argv is None and not os.environ.pop("EXECDRIVER_SERVER_TRIED", None)
            and warm.oci_verb(sys.argv[1:]) in warm.OCI_SERVED):
        code = warm.call("execdriver-oci", sys.argv[1:], error_code=1)
        if code is not None:
            return code
    if argv is None:
        # create and run stay here (the caller must be the container's ancestor), but a
        # server may still do their config.json translation
        import execdriver.oci
        execdriver.oci.remote_prepare = warm.prepare_bundle
    from execdriver.oci.cli import main as oci_main
    return oci_main(argv)


if __name__ == "__main__":
    sys.exit(main())
