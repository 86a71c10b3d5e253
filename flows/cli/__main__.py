"""`python -m flows.cli`: the `milimo` command."""

from flows.cli import run

run()
