"""The one planner: the store's state of each shot + the shot graph -> what renders, and why.

Pure: no database, no files, no Prefect. The store gathers `ShotState`s (artifact checks
included); this decides. A shot is done when its current take succeeded under the shot's spec,
its recorded artifacts still match, and it started from the handoff its predecessor's current
take produced. Everything after a shot that renders, in its chain, is planned too; at render
time such a shot is kept after all when its upstream hands off exactly what it had before
(`Store.done_take`), so a repaired file does not re-render a whole chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from .graph import ShotGraph


@dataclass(frozen=True)
class ShotState:
    shot_id: str
    spec_hash: str | None  # the shot's spec now
    take_status: str | None  # its current take's, None when it has none
    take_spec_hash: str | None = None
    handoff_in_sha256: str | None = None
    handoff_out_sha256: str | None = None
    handoff_ok: bool = False  # the take's handoff file exists and matches its record
    artifact_problem: str | None = None  # e.g. "mp4 missing", "thumbnail damaged (...)"
    pinned: bool = False  # a person pinned the current take: it stands even under another spec


@dataclass(frozen=True)
class PlannedShot:
    shot_id: str
    chain_index: int
    reason: str  # "new", "spec changed", "upstream changed", "mp4 missing", "failed", "stale", ...
    predecessor: str | None  # the shot whose handoff this one starts from
    needs_handoff: bool  # a later shot of the chain continues from this one


def _reason(state: ShotState | None, pred: ShotState | None) -> str | None:
    if state is None or state.take_status is None:
        return "new"
    if state.take_status != "succeeded":
        return state.take_status
    if state.take_spec_hash != state.spec_hash and not state.pinned:
        return "spec changed"
    if state.artifact_problem:
        return state.artifact_problem
    if pred is not None and (pred.take_status != "succeeded" or pred.handoff_out_sha256 != state.handoff_in_sha256):
        return "upstream changed"
    return None


def plan(graph: ShotGraph, states: dict[str, ShotState], only: list[str] | None = None) -> tuple[
        list[PlannedShot], list[str]]:
    """(shots to render in graph order, shots kept). `only` renders those shots and the unfinished
    upstream they need."""
    reasons: dict[str, str] = {}
    for chain in graph.chains:
        dirty = False
        for sid in chain.shot_ids:
            pred = graph.predecessor(sid)
            reason = "upstream re-renders" if dirty else _reason(states.get(sid), states.get(pred) if pred else None)
            if reason:
                reasons[sid] = reason
                dirty = True
    wanted = set(reasons)
    if only:
        wanted = set(only) & set(reasons)
        for sid in list(wanted):
            pred = graph.predecessor(sid)
            while pred and pred in reasons:
                wanted.add(pred)
                pred = graph.predecessor(pred)
    # A shot that renders from a kept predecessor needs that take's handoff file; without it the
    # predecessor renders again first.
    changed = True
    while changed:
        changed = False
        for sid in graph.order():
            pred = graph.predecessor(sid)
            if sid in wanted and pred and pred not in wanted and not states[pred].handoff_ok:
                wanted.add(pred)
                reasons.setdefault(pred, "handoff missing")
                changed = True
    shots = []
    for sid in graph.order():
        if sid in wanted:
            chain = graph.chain_of(sid)
            shots.append(PlannedShot(sid, chain.index, reasons[sid], graph.predecessor(sid), chain.shot_ids[-1] != sid))
    return shots, [sid for sid in graph.order() if sid not in wanted]
