"""Tables on a terminal, through `rich` (installed with Prefect). Piped, a table keeps its full width (no
wrapping) and no trailing blanks, so a script or a test reads the same cells a person sees."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    table = Table(*header, box=None, show_edge=False, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    if sys.stdout.isatty():
        Console(highlight=False).print(table)
        return
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, highlight=False, color_system=None).print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
