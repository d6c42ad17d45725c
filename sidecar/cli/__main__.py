"""`python -m sidecar.cli`: the same as the `task-sidecar` command."""

import sys

from . import main

sys.exit(main())
