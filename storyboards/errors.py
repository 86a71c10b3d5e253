"""Every error a person can act on, in one place, each with the exit code the CLI gives it.

2: the user fixes input, configuration or environment (one line per problem, the fix named);
1: a shot failed while rendering; 130/143: interrupted (run the same command to resume).
Engine errors (`milimo_engine.errors`) stay in the engine, which must not import this package;
the CLI maps them beside these.
"""

from __future__ import annotations

from dataclasses import dataclass


class MilimoError(Exception):
    exit_code = 2

    def lines(self) -> list[str]:
        """What the CLI prints, one line per problem."""
        return [str(self)]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a storyboard: where, which field, what, and the fix."""

    clip: str  # clip name, or "timeline"
    index: int | None  # shot index, None for the timeline
    field: str
    message: str
    fix: str
    code: str = "invalid"  # "missing_prompt" for shots that only need a prompt

    def __str__(self) -> str:
        where = "timeline" if self.index is None else f"shot {self.index + 1} {self.clip!r}"
        return f"{where}: {self.field}: {self.message}. Fix: {self.fix}"


class StoryboardInvalid(MilimoError, ValueError):
    """The storyboard reads, but fields are wrong: the full list of problems; never retried."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems] + [f"{self.source}: {len(self.problems)} problem(s)"]


class StoryboardFileError(MilimoError, ValueError):
    """The file itself cannot be read as a storyboard (missing, unreadable, not OTIO, no video track...)."""

    def __init__(self, path: object, message: str, fix: str):
        self.path, self.message, self.fix = str(path), message, fix
        super().__init__(f"{path}: {message}. Fix: {fix}")


@dataclass(frozen=True)
class RowProblem:
    """One thing wrong in a shot list (CSV): the row as a spreadsheet numbers it, the column, what, the fix."""

    row: int | None  # None: the file as a whole (a missing column, a shot no row fills)
    column: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "shot list"
        return f"{where}: column {self.column}: {self.message}. Fix: {self.fix}"


class ShotListInvalid(MilimoError, ValueError):
    """A shot list that cannot fill the cut: every problem, each naming the row and the column."""

    def __init__(self, source: object, problems: list[RowProblem]):
        self.source, self.problems = str(source), problems
        super().__init__(f"{source}: {len(problems)} problem(s): " + "; ".join(map(str, problems)))

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems] + [f"{self.source}: {len(self.problems)} problem(s)"]


class UnknownShot(MilimoError, LookupError):
    """A shot id that is not in the storyboard (a not-found, not a KeyError)."""

    def __init__(self, storyboard: str, shot_id: str, known: list[str]):
        self.storyboard, self.shot_id, self.known = storyboard, shot_id, known
        super().__init__(f"{storyboard}: no shot {shot_id!r}. Fix: use one of {known}")


class OverrideError(MilimoError, ValueError):
    """An override (`--set`, a rerun's parameters, `milimo overrides`) names an unknown key or is malformed."""


class ReviewError(MilimoError, ValueError):
    """A review that cannot be recorded as asked (no such take, a frame outside it, an empty note)."""

    def __init__(self, message: str, fix: str):
        self.message, self.fix = message, fix
        super().__init__(f"{message}. Fix: {fix}")


class DecisionChanged(ReviewError):
    """Someone else decided on the shot (a pin, a verdict) after the page asking was shown; nothing was changed,
    so no decision is overwritten unseen."""


class NotRunning(ReviewError):
    """A stop asked of a take that is not rendering (it finished, failed or was stopped already): nothing to do."""


class ConfigError(MilimoError):
    """Configuration or environment: a path, a model folder, an option that cannot work as given."""

    def __init__(self, message: str, fix: str):
        self.message, self.fix = message, fix
        super().__init__(f"{message}. Fix: {fix}")


class StoreError(ConfigError):
    """The store cannot be used as it is (unreachable, read-only, a schema this milimo does not know).
    Never retried: the same database answers the same way until someone fixes it."""


class ShotsFailed(MilimoError, RuntimeError):
    """One or more shots failed while rendering; the others finished and are recorded."""

    exit_code = 1

    def __init__(self, storyboard: str, failed: dict[str, str], also: list[str] | None = None):
        self.storyboard, self.failed, self.also = storyboard, failed, list(also or [])
        super().__init__(f"{len(failed)} shot(s) of {storyboard} failed: "
                         + "; ".join(f"{sid}: {msg}" for sid, msg in failed.items()))

    def lines(self) -> list[str]:
        """The shots first, then what else did not happen; the last line names a shot again, as people read the
        last line of a failed command first."""
        shots = [f"render failed: {self.storyboard}: shot {sid}: {msg}" for sid, msg in self.failed.items()]
        if not self.also:
            return shots
        return shots + [f"render failed: {self.storyboard}: {line}" for line in self.also] + [
            f"render failed: {self.storyboard}: {len(self.failed)} shot(s) failed, first {next(iter(self.failed))}"]


class Interrupted(MilimoError):
    """SIGINT or SIGTERM: the running shot stopped at its next step, no new shot started."""

    def __init__(self, signum: int, done: int = 0, left: int = 0):
        self.signum, self.done, self.left = signum, done, left
        self.exit_code = 128 + signum
        super().__init__(f"interrupted: {done} done, {left} left; run the same command to resume")
