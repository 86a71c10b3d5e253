"""One prepare per render: load -> overrides -> validate -> identity -> specs -> import revision -> plan.

`check` does everything that can refuse the request before anything is written (exit 2, nothing stored): the
storyboard loads (a cut with its shot list too), the shots it names exist, the model folder is usable, the stored
and new overrides apply and the result validates, and the store's storyboard of that name is this file. `plan`
then writes: the revision, the overrides, takes left by dead processes, and works out which shots render, each
with the upstream it continues from. Both run once per process for a render: the CLI checks before it starts
Prefect, and the flow in the same process takes that check (`checked`) instead of doing it again.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import storyboards
from milimo_engine.atomic import sweep_partials
from storyboards.errors import ConfigError, Problem, StoryboardInvalid
from storyboards.graph import ShotGraph
from storyboards.load import write_timeline
from storyboards.overrides import apply_overrides, merge
from storyboards.paths import OutputLayout
from storyboards.planner import PlannedShot
from storyboards.planner import plan as plan_shots
from storyboards.spec import ShotSpec
from storyboards.store import Store
from storyboards.validate import ValidationConfig, effective

if TYPE_CHECKING:
    from milimo_engine.manifest import ModelManifest

from .context import Context
from .request import RenderRequest

__all__ = ["CheckedBoard", "PlannedShot", "RenderPlan", "check", "checked", "load_board", "plan", "prepare", "remember"]


@dataclass
class CheckedBoard:
    """A storyboard that can render as asked: overrides applied, validated, its model and store known."""

    request: RenderRequest
    board: storyboards.Storyboard
    model_dir: str
    manifest: ModelManifest | None  # None: checked without the model (validate, import)
    store: Store | None  # None: no store yet (a SQLite file not created); `plan` creates it
    db_url: str
    config: ValidationConfig
    specs: dict[str, ShotSpec] = field(default_factory=dict)  # every shot's, when checked with the model


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
    store: Store
    specs: dict[str, ShotSpec] = field(default_factory=dict)
    abandoned: list[int] = field(default_factory=list)  # take ids a dead process left running
    revision: int = 0  # the storyboard revision this render imported

    @property
    def out_dir(self) -> Path:
        """This storyboard's folder under the output root."""
        return self.layout.storyboard_dir(self.board.name)


def load_board(request: RenderRequest) -> storyboards.Storyboard:
    """The storyboard the request names: a storyboard file, or an editor's cut with its shot list."""
    return storyboards.load(request.storyboard, shots_track=request.shots_track, rate=request.rate,
                            prompts=request.prompts, size=request.size, handles=request.handles)


def resolve_model_dir(model: str | None, board: storyboards.Storyboard | None = None) -> tuple[str, bool]:
    """(folder, named): --model (relative to where the command runs), else the storyboard's `defaults.model`
    (relative to its file), else the embedded tiny bundle. Absolute, so nothing below resolves it again against
    another folder."""
    if model:
        return str(Path(model).expanduser().absolute()), True
    chosen = (board.timeline_metadata.get("defaults") or {}).get("model") if board is not None else None
    if chosen and board is not None:
        path = Path(chosen).expanduser()
        return str(path if path.is_absolute() else (Path(board.source_path).parent / path).absolute()), True
    return "", False


def ensure_model(model: str, named: bool, models_dir: Path) -> str:
    """A model folder that exists: the tiny bundle built on first use when none was named; official files named
    directly (a checkpoint, or a folder of downloads) imported once into the cache (`milimo model import`)."""
    if not named:
        from milimo_engine.tiny import TINY_DIR_NAME, ensure_tiny_model  # torch: only to build the bundle

        return str(ensure_tiny_model(models_dir / TINY_DIR_NAME))
    path = Path(model)
    if (path.suffix == ".safetensors" and path.is_file()) or (
            path.is_dir() and not (path / "milimo-model.json").is_file() and any(path.glob("*.safetensors"))):
        from milimo_engine.official.importer import imported_folder

        return str(imported_folder(path, models_dir))
    if not (path / "milimo-model.json").is_file():
        raise ConfigError(f"model folder {model} has no milimo-model.json",
                          "point --model at a model folder (`milimo model import` makes one from Lightricks' "
                          "files; `milimo model tiny DIR` writes the demo bundle), or leave --model out")
    return model


def _model(request: RenderRequest, board: storyboards.Storyboard, context: Context):
    from milimo_engine.errors import InvalidGuidanceError
    from milimo_engine.manifest import ModelManifest

    model, named = resolve_model_dir(request.model or context.settings.model, board)
    model_dir = ensure_model(model, named, context.settings.models_dir)
    manifest = ModelManifest.read(Path(model_dir))
    try:
        manifest.check_stg_blocks(Path(model_dir))
    except InvalidGuidanceError as exc:
        raise ConfigError(f"{exc.field}={list(exc.value)}: {exc.reason}",
                          f"write blocks that exist there, e.g. {list(exc.nearest)}") from None
    return model_dir, manifest


def check(request: RenderRequest, context: Context, *, need_model: bool = True) -> CheckedBoard:
    """Everything that can refuse the request, before anything is written; see the module docstring."""
    board = load_board(request)
    for shot_id in request.shot_ids():
        board.shot(shot_id)  # UnknownShot naming the known shots
    _check_speed(context)
    if request.deliveries:
        from .delivery import chosen_profile

        for name in request.deliveries:
            chosen_profile(context.settings.config, name)  # a profile unknown, or its encoder missing: exit 2 now
    model_dir, manifest = _model(request, board, context) if need_model else ("", None)
    db_url = request.db or context.settings.db_url
    store = context.existing_store(db_url)
    stored = {}
    if store is not None:
        store.check_identity(board)
        stored = store.overrides(board.name)
    board = apply_overrides(board, merge(stored, request.overrides))
    if request.draft:  # this run only, never stored: every shot on the draft recipe (its own spec, its own takes)
        board = apply_overrides(board, {shot.shot_id: {"quality": "draft"} for shot in board.shots})
    roots = request.asset_roots or [str(r) for r in context.settings.asset_roots]
    config = ValidationConfig(asset_roots=tuple(Path(r) for r in roots), max_shot_frames=request.max_shot_frames)
    storyboards.validate(board, config).raise_if_invalid(request.storyboard)
    specs: dict[str, ShotSpec] = {}
    if need_model:
        assert manifest is not None
        check_prompt_lengths(board, model_dir, manifest, request.storyboard)
        # resolved once: the memory check reads them, `plan` imports them
        specs = storyboards.resolve_specs(board, manifest.model_id, config, manifest.shot_defaults(), validated=True)
        check_memory(board, specs, model_dir, manifest, request, context)

        def stored_uid() -> str | None:  # read after the folder's marker: a render that claimed it had stored it
            found = store or context.existing_store(db_url)
            return found.storyboard_uid(board.name) if found is not None else None

        check_outputs(board, context.layout(request.out), request.shot_ids(), stored_uid)
    return CheckedBoard(request, board, model_dir, manifest, store, db_url, config, specs)


def check_prompt_lengths(board: storyboards.Storyboard, model_dir: str, manifest: ModelManifest, source: str) -> None:
    """A prompt longer than the text encoder's window is cut there by the tokenizer, and the shot renders from its
    start alone (a 23,600-character prompt rendered from its first 1,024 tokens, said nowhere): refused before
    anything is stored, per shot and field, with its length and the window."""
    from milimo_engine.ledger import ModelLedger
    from milimo_engine.text import prompt_length

    tokenizer = None
    problems = []
    limit = manifest.max_sequence_length
    for shot in board.shots:
        for key in ("prompt", "negative_prompt"):
            text = effective(board, shot, key)
            if not isinstance(text, str) or len(text) + 2 <= limit:  # a token is a character or more, + BOS/EOS
                continue
            tokenizer = tokenizer or ModelLedger.open(model_dir).tokenizer()
            length = prompt_length(tokenizer, text)
            if length > limit:
                problems.append(Problem(shot.name, shot.index, key,
                                        f"{length} tokens ({len(text)} characters); the text encoder reads {limit} and "
                                        "would render from the start alone", f"shorten it to {limit} tokens or less"))
    if problems:
        raise StoryboardInvalid(source, problems)


def _check_speed(context: Context) -> None:
    """An attention backend whose package is missing is refused before anything is stored, not in every shot."""
    engine = context.settings.config.engine
    if engine.attention == "native":
        return
    from milimo_engine.errors import InvalidRequestError

    try:
        engine.speed().check()
    except InvalidRequestError as exc:
        raise ConfigError(f"--attention {engine.attention} ([engine] attention): {exc.reason.rstrip('.')}",
                          "install its package, or leave attention at native (torch SDPA)") from None


def check_memory(board: storyboards.Storyboard, specs: dict[str, ShotSpec], model_dir: str, manifest: ModelManifest,
                 request: RenderRequest, context: Context) -> None:
    """A shot that fits its device in no memory mode (or not in the mode asked for) is refused now, per shot, with
    what it needs, what the device has and what would fit; found at its turn, it failed after the shots before it.
    Checked against the memory told (`--device-memory`, [engine] device_memory) or this host's GPU; a CPU host's
    memory is checked when each shot starts (the planner's meta builds cost seconds a validate need not pay)."""
    import torch

    memory = request.memory(context.settings.config)
    on_gpu = not request.farm and torch.cuda.is_available()
    if memory.device_memory is None and not on_gpu:
        return
    from milimo_engine.ledger import render_dtype
    from milimo_engine.memory import DeviceMemoryError, MemoryPlanner, ShotShape, device_capacity

    device = (request.devices or (["cuda:0"] if on_gpu else ["cpu"]))[0]
    capacity = device_capacity(device, memory.device_memory)
    planner = MemoryPlanner(model_dir, render_dtype(device), manifest)
    scope = None  # every shot; a rerender or --only: the shots it may render
    if request.only or request.from_shot:
        graph = ShotGraph.of(board)
        scope = set(request.only or ())
        scope |= {s for named in scope for s in graph.upstream(named)}
        if request.from_shot:
            scope |= {request.from_shot, *graph.downstream(request.from_shot)}
    problems = []
    for shot in board.shots:
        if scope is not None and shot.shot_id not in scope:
            continue
        shape = ShotShape.of(specs[shot.shot_id].request(), manifest, Path(model_dir))
        try:
            planner.choose(shape, memory.mode, capacity)
        except DeviceMemoryError as exc:
            problems.append(Problem(shot.name, shot.index, "memory", exc.needs, exc.fix))
    if problems:
        raise StoryboardInvalid(request.storyboard, problems)


FREE_SPACE_MARGIN = 256 * 1024 * 1024  # the store, previews, handoffs and logs beside the takes
# A take on disk per pixel-frame: its ProRes 422 HQ .mov (Apple's figure: 220 Mb/s at 1920x1080x29.97, 0.44 byte),
# the H.264 mp4 (CRF 18) and its handoff tail, generously.
_BYTES_PER_PIXEL_FRAME = 0.6


def check_outputs(board: storyboards.Storyboard, layout: OutputLayout, only: list[str],
                  uid: Callable[[], str | None]) -> None:
    """What a render needs of its output folder, known before the first shot: the folder is this storyboard's in this
    store (`uid`), or free, it can be written, and the disk has room for the takes planned (an estimate). Found here,
    it is exit 2 with the fix; found after the first shot of every chain, it was a traceback in each take."""
    folder = layout.check_claim(board.name, uid)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".milimo-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"the output folder {existing} cannot be written ({exc.strerror or type(exc).__name__})",
                          "give --out a folder you can write (or [paths] out in milimo.toml)") from None
    shots = [s for s in board.shots if not only or s.shot_id in only]
    need = FREE_SPACE_MARGIN + sum(
        int(s.source_frames * (_side(board, s, "width", 768) * _side(board, s, "height", 512)) * _BYTES_PER_PIXEL_FRAME)
        for s in shots)
    free = shutil.disk_usage(existing).free
    if free < need:
        raise ConfigError(f"the output folder {existing} has {free / 2**20:.0f} MiB free; the {len(shots)} shot(s) "
                          f"planned need about {need / 2**20:.0f} MiB",
                          "free some space there, or give --out a folder on a larger disk")


def _side(board: storyboards.Storyboard, shot: storyboards.Shot, key: str, default: int) -> int:
    value = effective(board, shot, key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


_checks: dict[str, CheckedBoard] = {}
_checks_lock = threading.Lock()


def _key(request: RenderRequest) -> str:
    files = [p for p in (request.storyboard, request.prompts) if p]
    stamp = "".join(f"{p}:{Path(p).stat().st_mtime_ns}:{Path(p).stat().st_size};" for p in files if Path(p).exists())
    return hashlib.sha256((request.model_dump_json() + stamp).encode()).hexdigest()


def remember(result: CheckedBoard) -> CheckedBoard:
    """Keep this check for the flow this process runs next on the same request (`checked` takes it)."""
    with _checks_lock:
        _checks[_key(result.request)] = result
    return result


def checked(request: RenderRequest, context: Context) -> CheckedBoard:
    """This process's check of `request` (the CLI made it before starting the flow), or a new one (a deployment, a
    worker): the same request on unchanged files is checked once per process."""
    with _checks_lock:
        found = _checks.pop(_key(request), None)
    return found if found is not None else check(request, context)


def plan(checked_board: CheckedBoard, context: Context,
         is_dead: Callable[[str | None], bool] | None = None) -> RenderPlan:
    """Write what the render needs recorded and work out what renders; see the module docstring."""
    request, board, manifest = checked_board.request, checked_board.board, checked_board.manifest
    assert manifest is not None, "a render is checked with its model"
    layout = context.layout(request.out)
    store = (checked_board.store or context.store(checked_board.db_url)).under(layout.root)
    model_id = manifest.model_id
    specs = checked_board.specs
    revision = store.import_revision(board, specs)
    uid = store.storyboard_uid(board.name)
    assert uid is not None, "an imported storyboard has its id"
    folder = layout.claim(board.name, uid)  # refuses a name that would leave the output root, or another's folder
    if board.prompts_path is not None:  # the cut + shot list, as the storyboard it became: open it, render it again
        write_timeline(board.timeline, layout.imported_storyboard(board.name))
    for shot_id, values in (request.overrides or {}).items():
        store.set_overrides(board.name, shot_id, values)
    abandoned = []
    if is_dead is not None:
        for take in store.running_takes(board.name):
            if is_dead(take.host):
                store.fail_take(take.id, f"abandoned: the process that ran it ({take.host}) died")
                abandoned.append(take.id)
        # A take on another host: its worker's heartbeat says whether it lives (a pid cannot be seen from here).
        abandoned += store.abandon_stale(board.name, context.settings.heartbeat_timeout_s)
        sweep_partials(folder)
    if request.from_shot:
        store.rerender_from(board.name, request.from_shot)
    graph = ShotGraph.of(board)
    shots, skipped = plan_shots(graph, store.shot_states(board.name), request.only)
    return RenderPlan(board, graph, checked_board.model_dir, model_id, checked_board.db_url, layout, shots, skipped,
                      store, specs, abandoned, revision)


def prepare(request: RenderRequest, context: Context,
            is_dead: Callable[[str | None], bool] | None = None) -> RenderPlan:
    """`checked` then `plan`: what the render flow does first."""
    return plan(checked(request, context), context, is_dead)
