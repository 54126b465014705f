"""``python -m execdriver``: the same as the ``execdriver`` command."""

import sys

from execdriver.cli.main import main

sys.exit(main())
