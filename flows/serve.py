"""`milimo serve`: Prefect deployments for scheduled renders, reruns and a watched folder of cuts.

- `render-<storyboard>`: renders a storyboard on a cron schedule (only what is not done).
- `rerun`: `rerender(request)`; trigger it from the Prefect UI (a form of the request) or a script with
  `run_deployment("rerender-storyboard/rerun", parameters={"request": RenderRequest(...).model_dump()})`.
- `watch`: every `interval_s`, renders each new cut dropped into the folder (an editor's cut with its
  shot list beside it: `cut.edl` + `cut.csv`). A cut counts as seen only once it rendered; a cut that
  failed is tried again after a back-off, and a changed cut or shot list is new. One scan at a time, and a
  cut still being written waits (`flows.watch`).

Configured in milimo.toml's `[serve]` (`[[serve.schedule]]`, `[serve.watch]`) and `[paths]`; see
`milimo.config`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from milimo.config import MilimoConfig, WatchRules
from milimo.request import RenderRequest
from milimo.settings import Settings
from storyboards.fields import slug

CUT_SUFFIXES = (".otio", ".otioz", ".edl", ".xml", ".aaf")


def template(settings: Settings) -> RenderRequest:
    """What every served render shares, from the settings: model, outputs, store, asset roots, QA, and the farm
    (`[farm] scheduler`: served renders run there, like `milimo render --farm`)."""
    config = settings.config
    return RenderRequest(storyboard="", model=settings.model, out=str(settings.out_root), db=settings.db_url,
                         asset_roots=[str(r) for r in settings.asset_roots] or None, qa=config.qa,
                         farm=config.farm.scheduler, shots_track=config.cuts.shots_track,
                         max_shot_frames=config.cuts.max_shot_frames, handles=config.cuts.handles)


@flow(name="import-cuts", log_prints=True)
def import_cuts(folder: str, request: RenderRequest, rules: WatchRules | None = None) -> list[str]:
    """Render every cut in `folder` not rendered before (by the content of the cut and its shot list), each as
    `request` with that cut. One scan at a time; a cut still being written waits; a cut is marked seen only
    after its render succeeded, and one that failed is tried again after a back-off (`flows.watch`)."""
    from milimo import context as app_context

    from .watch import one_scan, state_dir

    log = get_run_logger()
    rules = rules or WatchRules()
    state = state_dir(app_context.current().layout(request.out).root, Path(folder))
    with one_scan(state) as mine:
        if not mine:
            log.info("the previous scan of %s is still rendering; this scan ends", folder)
            return []
        return _scan(Path(folder), request, rules, state)


def _scan(folder: Path, request: RenderRequest, rules: WatchRules, state: Path) -> list[str]:
    import hashlib

    from milimo import context as app_context
    from milimo_engine.hashing import file_sha256
    from storyboards.errors import MilimoError

    from .render import render_storyboard
    from .watch import Failures, settled

    log = get_run_logger()
    store = app_context.current().store(request.db, request.out)
    seen = {(path, sha) for kind, path, sha in store.files_seen() if kind == "cut"}
    failures = Failures.read(state)
    rendered = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in CUT_SUFFIXES and p.is_file()):
        shot_list = path.with_suffix(".csv")
        prompts = str(shot_list) if shot_list.is_file() and path.suffix.lower() != ".otio" else None
        if not settled([path] + ([shot_list] if prompts else []), rules):
            log.info("cut %s is still being written; it waits for the next scan", path.name)
            continue
        content = file_sha256(path) if prompts is None else hashlib.sha256(
            f"{file_sha256(path)}:{file_sha256(shot_list)}".encode()).hexdigest()
        if (str(path.resolve()), content) in seen:
            continue
        later = failures.due(content, rules)
        if later:
            log.info("cut %s %s", path.name, later)
            continue
        cut = request.model_copy(update={"storyboard": str(path), "prompts": prompts,
                                         "rate": request.rate if path.suffix.lower() == ".edl" else None})
        try:
            render_storyboard(cut)
        except MilimoError as exc:  # cannot render as it is (file, field, store), or a shot failed: tried again later
            attempts = failures.failed(content, rules)
            log.error("cut %s did not render (attempt %d of %d):\n%s", path.name, attempts, rules.max_attempts,
                      "\n".join(exc.lines()))
            continue
        failures.succeeded(content)
        store.seen_file("cut", str(path.resolve()), content)
        rendered.append(str(path))
    return rendered


def build_deployments(config: MilimoConfig, settings: Settings) -> list:
    """The cron renders, the rerun and the watch folder, each submitting a `RenderRequest`."""
    from .render import render_storyboard, rerender

    base = template(settings)
    deployments = []
    for schedule in config.serve.schedule:
        stem = slug(Path(schedule.storyboard).stem, fallback="storyboard")
        request = base.model_copy(update={"storyboard": str(Path(schedule.storyboard).resolve()),
                                          "prompts": str(Path(schedule.prompts).resolve()) if schedule.prompts
                                          else None})
        deployments.append(render_storyboard.to_deployment(
            name=f"render-{stem}", cron=schedule.cron, parameters={"request": request.model_dump(mode="json")}))
    deployments.append(rerender.to_deployment(name="rerun", parameters={"request": base.model_dump(mode="json")}))
    if config.serve.watch:
        watch = base.model_copy(update={"rate": config.rates.edl})
        from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

        deployments.append(import_cuts.to_deployment(
            name="watch", interval=config.serve.watch.interval_s,  # a scan due while one runs is not started
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            parameters={"folder": str(Path(config.serve.watch.folder).resolve()),
                        "request": watch.model_dump(mode="json"),
                        "rules": config.serve.watch.rules().model_dump(mode="json")}))
    return deployments


def serve(config: MilimoConfig, settings: Settings) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(config, settings))
