"""Print docs/engine.md's memory table: LTX-2 at full size (its configs on the meta device, no weights) in each
memory mode, with the distilled LoRA's rank-384 adapters, against 24 / 48 / 80 / 141 GB devices.

    python bench/memory_table.py        # paste between the <!-- memory-table --> markers
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milimo_engine.full_size import DISTILLED_LORA_RANK, write_full_size_configs  # noqa: E402
from milimo_engine.limits import GIB  # noqa: E402
from milimo_engine.memory import MODES, MemoryPlanner, ShotShape  # noqa: E402

SIZES = ((768, 512, 121), (1536, 1024, 121))
DEVICES_GB = (24, 48, 80, 141)


def table() -> str:
    with tempfile.TemporaryDirectory() as scratch:
        planner = MemoryPlanner(write_full_size_configs(Path(scratch) / "ltx2"), "bfloat16")
        lines = ["| shot | mode | peak | " + " | ".join(f"{gb} GB" for gb in DEVICES_GB) + " |",
                 "|---|---|---|" + "---|" * len(DEVICES_GB)]
        for w, h, f in SIZES:
            plan = planner.plan(ShotShape(w, h, f, lora_ranks=(DISTILLED_LORA_RANK,)))
            for mode in MODES:
                peak = plan.mode(mode).peak
                fits = " | ".join("yes" if peak <= gb * GIB else "no" for gb in DEVICES_GB)
                lines.append(f"| {w}x{h}x{f} | {mode} | {peak / GIB:.1f} GiB | {fits} |")
        return "\n".join(lines)


if __name__ == "__main__":
    print(table())
