"""Tables on a terminal, through `rich` (installed with Prefect). Piped, or longer than a screenful of
screenfuls, a table is aligned plainly, as rich lays it out without a box (two spaces between columns, full width,
no trailing blanks): a script or a test reads the same cells a person sees, and a 5,000-shot status prints in a
blink instead of rich's 20 seconds."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

RICH_ROWS = 500  # above this, rich's layout costs seconds: the plain one


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    cells = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    if sys.stdout.isatty() and len(cells) <= RICH_ROWS:
        table = Table(*header, box=None, show_edge=False, pad_edge=False, header_style="bold")
        for row in cells:
            table.add_row(*row)
        Console(highlight=False).print(table)
        return
    lines = [list(header), *cells]
    widths = [max(cell_len(line[i]) for line in lines) for i in range(len(header))]  # wide scripts: 2 cells
    sys.stdout.write("".join("  ".join(c + " " * (w - cell_len(c)) for c, w in zip(line, widths, strict=False))
                             .rstrip() + "\n" for line in lines))
