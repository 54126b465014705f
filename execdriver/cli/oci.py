"""Console script ``execdriver-oci`` (the OCI runtime front end, see execdriver.oci)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    if argv is None and not os.environ.pop("EXECDRIVER_SERVER_TRIED", None):
        from execdriver.cli import warm
        if warm.oci_verb(sys.argv[1:]) in warm.OCI_SERVED:
            code = warm.call("execdriver-oci", sys.argv[1:], error_code=1)
            if code is not None:
                return code
    from execdriver.oci.cli import main as oci_main
    return oci_main(argv)


if __name__ == "__main__":
    sys.exit(main())
