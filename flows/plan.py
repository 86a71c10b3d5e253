"""Everything a storyboard render decides before any GPU work: pure logic, testable without Prefect.

Load the timeline, apply stored and new overrides, validate (every problem at once), import the
revision into the store, settle takes left running by dead processes, and work out which shots
render, in which order, each with the upstream it continues from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import storyboards
from milimo_engine.atomic import sweep_partials
from storyboards.errors import ConfigError
from storyboards.fields import slug
from storyboards.graph import ShotGraph
from storyboards.load import write_timeline
from storyboards.overrides import apply_overrides, merge
from storyboards.paths import OutputLayout
from storyboards.planner import PlannedShot, plan
from storyboards.store.db import default_url
from storyboards.validate import ValidationConfig

DEFAULT_OUT = "renders"
HEARTBEAT_TIMEOUT_S = float(os.environ.get("MILIMO_HEARTBEAT_TIMEOUT_S", "120"))

__all__ = ["PlannedShot", "RenderPlan", "prepare", "resolve_model_dir"]


@dataclass
class RenderPlan:
    board: storyboards.Storyboard
    graph: ShotGraph
    model_dir: str
    model_id: str
    db_url: str
    layout: OutputLayout
    shots: list[PlannedShot]
    skipped: list[str]  # done already: same spec, same upstream handoff, artifacts as recorded
    abandoned: list[int] = field(default_factory=list)  # take ids a dead process left running
    revision: int = 0  # the storyboard revision this render imported

    @property
    def out_dir(self) -> Path:
        """This storyboard's folder under the output root."""
        return self.layout.storyboard_dir(self.board.name)


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
    """Build the tiny bundle on first use when no model was named; a named folder must exist. Official files named
    directly (a checkpoint, or a folder of downloads) are imported once into the cache (`milimo model import`)."""
    from milimo_engine.tiny import default_tiny_model_dir

    if not explicit and Path(model_dir) == default_tiny_model_dir():
        from milimo_engine.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model_dir))
    path = Path(model_dir)
    if (path.suffix == ".safetensors" and path.is_file()) or (
            path.is_dir() and not (path / "milimo-model.json").is_file() and any(path.glob("*.safetensors"))):
        from milimo_engine.official.importer import imported_folder

        return str(imported_folder(path, default_tiny_model_dir().parent))
    if not (Path(model_dir) / "milimo-model.json").is_file():
        raise ConfigError(f"model folder {model_dir} has no milimo-model.json",
                          "point --model at a folder in diffusers' LTX-2 layout with a milimo-model.json "
                          "(`milimo model tiny DIR` writes one), or leave --model out for the tiny demo model")
    return model_dir


def prepare(storyboard: str | os.PathLike, *, model: str | None = None, out: str | None = None,
            db: str | None = None, only: list[str] | None = None, from_shot: str | None = None,
            overrides: dict[str, dict[str, Any]] | None = None, rate: float | None = None, draft: bool = False,
            is_dead: Callable[[str | None], bool] | None = None, prompts: str | None = None,
            size: tuple[int, int] | None = None, asset_roots: list[str] | None = None) -> RenderPlan:
    """Validate and import the storyboard and plan the render. Raises StoryboardInvalid (with every
    problem), StoryboardFileError or UnknownShot before anything is written when it cannot render."""
    from milimo_engine.errors import InvalidGuidanceError
    from milimo_engine.manifest import ModelManifest

    from tasks.worker import store_for

    db_url = db or default_url()
    board = storyboards.load(storyboard, rate=rate, prompts=prompts, size=size)
    # The model folder is checked before the store is opened: a wrong --model stores nothing.
    model_dir = ensure_model(resolve_model_dir(model, board), explicit=bool(model))
    manifest = ModelManifest.read(Path(model_dir))
    try:
        manifest.check_stg_blocks(Path(model_dir))
    except InvalidGuidanceError as exc:
        raise ConfigError(f"{exc.field}={list(exc.value)}: {exc.reason}",
                          f"write blocks that exist there, e.g. {list(exc.nearest)}") from None
    store = store_for(db_url)  # one per process: the schema check runs once, not on every render
    board = apply_overrides(board, merge(store.overrides(board.name), overrides))
    if draft:  # this run only, never stored: every shot on the draft recipe (its own spec, its own takes)
        board = apply_overrides(board, {shot.shot_id: {"quality": "draft"} for shot in board.shots})
    for sid in list(only or []) + ([from_shot] if from_shot else []) + list(overrides or {}):
        board.shot(sid)  # UnknownShot naming the known shots
    store.check_identity(board)
    model_id = manifest.model_id
    config = ValidationConfig(asset_roots=tuple(Path(root) for root in asset_roots or ()))
    specs = storyboards.resolve_specs(board, model_id, config, manifest.shot_defaults())
    layout = OutputLayout.at(out or DEFAULT_OUT)
    folder = layout.storyboard_dir(board.name)  # refuses a name that would leave the output root
    revision = store.import_revision(board, specs)
    if board.prompts_path is not None:  # the cut + shot list, as the storyboard it became: open it, render it again
        write_timeline(board.timeline, folder / f"{slug(board.name, 'storyboard')}.storyboard.otio")
    for shot_id, values in (overrides or {}).items():
        store.set_overrides(board.name, shot_id, values)

    abandoned = []
    if is_dead is not None:
        for take in store.running_takes(board.name):
            if is_dead(take.host):
                store.fail_take(take.id, f"abandoned: the process that ran it ({take.host}) died")
                abandoned.append(take.id)
        # A take on another host: its worker's heartbeat says whether it lives (a pid cannot be seen from here).
        abandoned += store.abandon_stale(board.name, HEARTBEAT_TIMEOUT_S)
        sweep_partials(layout.storyboard_dir(board.name))
    if from_shot:
        store.rerender_from(board.name, from_shot)
    graph = ShotGraph.of(board)
    shots, skipped = plan(graph, store.shot_states(board.name), only)
    return RenderPlan(board, graph, model_dir, model_id, db_url, layout, shots, skipped, abandoned, revision)
