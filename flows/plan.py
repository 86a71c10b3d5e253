"""Everything a storyboard render decides before any GPU work: pure logic, testable without Prefect.

Load the timeline, apply stored and new overrides, validate (every problem at once), import the
revision into the store, settle takes left running by dead processes, and work out which shots
render, in which order, each with the upstream it continues from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import storyboards
from storyboards.graph import ShotGraph
from storyboards.overrides import apply_overrides
from storyboards.store import Store
from storyboards.store.db import default_url
from storyboards.validate import ValidationConfig

DEFAULT_OUT = "renders"


@dataclass(frozen=True)
class PlannedShot:
    shot_id: str
    chain_index: int
    reason: str
    predecessor: str | None  # the shot whose handoff this one starts from
    needs_handoff: bool  # a later shot of the chain continues from this one


@dataclass
class RenderPlan:
    board: storyboards.Storyboard
    graph: ShotGraph
    model_dir: str
    model_id: str
    db_url: str
    out_dir: Path  # this storyboard's folder under the output root
    shots: list[PlannedShot]
    skipped: list[str]  # done already: same spec, same upstream handoff
    abandoned: list[int] = field(default_factory=list)  # take ids a dead process left running


def resolve_model_dir(model: str | None, board: storyboards.Storyboard | None = None) -> str:
    """--model, else the storyboard's `defaults.model`, else the embedded tiny bundle."""
    if model:
        return str(Path(model).expanduser())
    chosen = (board.timeline_metadata.get("defaults") or {}).get("model") if board is not None else None
    if chosen:
        path = Path(chosen).expanduser()
        return str(path if path.is_absolute() else Path(board.source_path).parent / path)
    from milimo_engine.tiny import default_tiny_model_dir

    return str(default_tiny_model_dir())


def ensure_model(model_dir: str, explicit: bool) -> str:
    """Build the tiny bundle on first use when no model was named; a named folder must exist."""
    from milimo_engine.tiny import default_tiny_model_dir

    if not explicit and Path(model_dir) == default_tiny_model_dir():
        from milimo_engine.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model_dir))
    return model_dir


def load_board(storyboard: str | os.PathLike, store: Store | None = None,
               overrides: dict[str, dict[str, Any]] | None = None) -> storyboards.Storyboard:
    """The storyboard with the store's recorded overrides, then these new ones, applied."""
    board = storyboards.load(storyboard)
    merged: dict[str, dict[str, Any]] = {}
    if store is not None:
        merged = store.overrides(board.name)
    for shot_id, values in (overrides or {}).items():
        merged[shot_id] = {**merged.get(shot_id, {}), **values}
    return apply_overrides(board, merged)


def prepare(storyboard: str | os.PathLike, *, model: str | None = None, out: str | None = None,
            db: str | None = None, only: list[str] | None = None, from_shot: str | None = None,
            overrides: dict[str, dict[str, Any]] | None = None,
            is_dead=None) -> RenderPlan:
    """Validate and import the storyboard and plan the render. Raises StoryboardInvalid (with every
    problem) before anything is written when the storyboard cannot render."""
    from milimo_engine.manifest import ModelManifest

    from tasks.worker import store_for

    db_url = db or default_url()
    store = store_for(db_url)  # one per process: the schema check runs once, not on every render
    board = load_board(storyboard, store, overrides)
    for sid in list(only or []) + ([from_shot] if from_shot else []):
        board.shot(sid)  # KeyError naming the known shots
    model_dir = ensure_model(resolve_model_dir(model, board), explicit=bool(model))
    model_id = ModelManifest.read(Path(model_dir)).model_id
    specs = storyboards.resolve_specs(board, model_id, ValidationConfig())
    store.import_revision(board, specs)
    for shot_id, values in (overrides or {}).items():
        store.set_overrides(board.name, shot_id, values)

    abandoned = []
    if is_dead is not None:
        for take in store.running_takes(board.name):
            if is_dead(take.host):
                store.fail_take(take.id, f"abandoned: the process that ran it ({take.host}) died")
                abandoned.append(take.id)
    if from_shot:
        store.rerender_from(board.name, from_shot)

    graph = ShotGraph.of(board)
    planned = {item.shot_id: item for item in store.plan(board.name)}
    wanted = _with_upstream(set(only), planned, graph) if only else set(planned)
    # A shot continuing from a done shot needs that take's handoff file; without it the
    # predecessor renders again (and so does the rest of the chain).
    changed = True
    while changed:
        changed = False
        for sid in graph.order():
            pred = graph.predecessor(sid)
            if sid in wanted and pred and pred not in wanted and not _handoff_ok(store, board.name, pred):
                for later in graph.downstream(pred):
                    if later not in wanted:
                        wanted.add(later)
                        changed = True
    shots = []
    for sid in graph.order():
        if sid not in wanted:
            continue
        chain = graph.chain_of(sid)
        item = planned.get(sid)
        shots.append(PlannedShot(sid, chain.index, item.reason if item else "handoff missing",
                                 graph.predecessor(sid), chain.shot_ids[-1] != sid))
    skipped = [sid for sid in graph.order() if sid not in wanted]
    return RenderPlan(board, graph, model_dir, model_id, db_url, Path(out or DEFAULT_OUT).resolve() / board.name,
                      shots, skipped, abandoned)


def _with_upstream(only: set[str], planned: dict, graph: ShotGraph) -> set[str]:
    """`only` plus the earlier shots of their chains that must render first (not done yet)."""
    wanted = set(only) & set(planned)
    for sid in list(wanted):
        pred = graph.predecessor(sid)
        while pred and pred in planned:
            wanted.add(pred)
            pred = graph.predecessor(pred)
    return wanted


def _handoff_ok(store: Store, board: str, shot_id: str) -> bool:
    take = store.current_take(board, shot_id)
    return bool(take and take.status == "succeeded" and take.handoff_out_path
                and Path(take.handoff_out_path).is_file() and take.handoff_out_sha256)
