"""Console script ``execdriver-oci`` (the OCI runtime front end, see execdriver.oci)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from execdriver.oci.cli import main as oci_main
    return oci_main(argv)


if __name__ == "__main__":
    sys.exit(main())
