"""The one table from an error to what each way out says: the CLI's exit code, the dashboard's HTTP status, the
flow's Prefect state, and whether the message stands alone (input a person fixes) or keeps its traceback (a bug).

    exit 2  input, configuration or environment to fix: one line per problem, the fix named
    exit 1  a shot failed while rendering (or, outside a render, an unexpected error)
    128+N   interrupted by signal N (130 Ctrl-C, 143 SIGTERM)
"""

from __future__ import annotations

from dataclasses import dataclass

from milimo_engine.errors import (
    HandoffError,
    InvalidRequestError,
    MissingComponentError,
    ModelFileError,
    RenderCancelled,
)
from storyboards.errors import (
    DecisionChanged,
    Interrupted,
    MilimoError,
    NotRunning,
    OverrideError,
    ShotsFailed,
    StoreError,
    UnknownShot,
)


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    http_status: int
    state: str  # the Prefect state a flow ends in: "Failed" or "Cancelled"
    lines: tuple[str, ...]  # what to print, one problem a line
    fixable: bool  # a person fixes it from the message; False: a bug, keep the traceback


# (family, exit code, HTTP status, Prefect state, fixable): the first row that matches wins.
TABLE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int, int, str, bool], ...] = (
    (Interrupted, -1, 503, "Cancelled", True),  # exit 128 + the signal
    (KeyboardInterrupt, 130, 503, "Cancelled", True),
    (RenderCancelled, 130, 503, "Cancelled", True),
    (ShotsFailed, 1, 500, "Failed", True),
    (UnknownShot, 2, 404, "Failed", True),
    (StoreError, 2, 503, "Failed", True),
    (OverrideError, 2, 422, "Failed", True),
    (DecisionChanged, 2, 409, "Failed", True),  # someone decided since the page was shown: look again
    (NotRunning, 2, 409, "Failed", True),  # a stop asked of a take that already ended
    (MilimoError, 2, 422, "Failed", True),
    ((ModelFileError, InvalidRequestError, HandoffError, MissingComponentError), 2, 422, "Failed", True),
    (FileExistsError, 2, 409, "Failed", True),
)


def outcome(exc: BaseException, *, rendering: bool = False) -> Outcome:
    """What `exc` means to each way out. `rendering`: the command renders, so an unexpected error is a render
    that failed (its message says so)."""
    for family, code, status, state, fixable in TABLE:
        if isinstance(exc, family):
            if isinstance(exc, Interrupted):
                code = exc.exit_code
            return Outcome(code, status, state, tuple(_lines(exc)), fixable)
    what = "render failed" if rendering else "error"
    return Outcome(1, 500, "Failed", (f"{what}: {type(exc).__name__}: {exc}",), False)


def _lines(exc: BaseException) -> list[str]:
    if isinstance(exc, MilimoError):
        return exc.lines()
    if isinstance(exc, (InvalidRequestError, HandoffError, MissingComponentError, FileExistsError)) \
            and not isinstance(exc, ModelFileError):
        return [f"invalid input: {exc}"]
    if isinstance(exc, KeyboardInterrupt):
        return ["interrupted; run the same command to resume"]
    return [str(exc)]
