"""`python -m flows.cli`: the `milimo` command."""

import sys

from flows.cli import main

sys.exit(main())
