"""Per-step progress: a bar on a terminal, nothing otherwise, and the caller's hook either way."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from .denoise import StepCallback, StepInfo
from .errors import RenderCancelled


def step_hook(user: StepCallback | None, *, show_bar: bool | None, deadline: float | None,
              label: str = "") -> tuple[StepCallback, Callable[[], None]]:
    """Combine the progress bar, the caller's callback and a time limit into one step callback.

    The time limit is checked between steps because a thread cannot be interrupted mid-kernel.
    Returns (callback, close).
    """
    if show_bar is None:
        show_bar = sys.stderr.isatty()
    bars: dict[str, Any] = {}

    def callback(info: StepInfo) -> bool | None:
        if show_bar:
            from tqdm.auto import tqdm

            bar = bars.get(info.stage)
            if bar is None:
                bar = bars[info.stage] = tqdm(total=info.total, desc=f"{label}{info.stage}", leave=False,
                                              file=sys.stderr)
            bar.update(1)
        if deadline is not None and time.monotonic() > deadline:
            raise RenderCancelled(info.stage, info.step, "per-shot time limit reached")
        return user(info) if user is not None else None

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return callback, close
