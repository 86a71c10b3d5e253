"""`milimo serve`: Prefect deployments for scheduled renders, reruns and a watched folder of cuts.

- `render-<storyboard>`: renders a storyboard on a cron schedule (only what is not done).
- `rerun`: `rerender(request)`; trigger it from the Prefect UI (a form of the request) or a script with
  `run_deployment("rerender-storyboard/rerun", parameters={"request": RenderRequest(...).model_dump()})`.
- `watch`: every `interval_s`, renders each new cut dropped into the folder (an editor's cut with its
  shot list beside it: `cut.edl` + `cut.csv`). A cut counts as seen only once it rendered; a cut that
  failed is tried again on the next scan, and a changed cut or shot list is new.

Configured in milimo.toml's `[serve]` (`[[serve.schedule]]`, `[serve.watch]`) and `[paths]`; see
`milimo.config`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from milimo.config import MilimoConfig, ScheduleConfig, WatchConfig
from milimo.request import RenderRequest
from milimo.settings import Settings
from storyboards.fields import slug

CUT_SUFFIXES = (".otio", ".otioz", ".edl", ".xml")


def with_cli(config: MilimoConfig, *, storyboard: str | None, cron: str | None, watch: str | None,
             interval_s: float | None) -> MilimoConfig:
    """The file's [serve] with the command line's schedule and watch folder on top."""
    from storyboards.errors import ConfigError

    if bool(storyboard) != bool(cron):
        raise ConfigError("--storyboard and --cron go together", "give both, or neither")
    serve = config.serve
    if storyboard:
        serve = serve.model_copy(update={"schedule": serve.schedule + (ScheduleConfig(storyboard=storyboard,
                                                                                      cron=cron),)})
    if watch or interval_s:
        folder = Path(watch) if watch else (serve.watch.folder if serve.watch else None)
        if folder is None:
            raise ConfigError("--interval needs a watched folder", "give --watch DIR or [serve.watch] folder")
        serve = serve.model_copy(update={"watch": WatchConfig(
            folder=folder, interval_s=interval_s or (serve.watch.interval_s if serve.watch else 30.0))})
    return config.model_copy(update={"serve": serve})


def template(settings: Settings) -> RenderRequest:
    """What every served render shares, from the settings: model, outputs, store, asset roots, QA, and the farm
    (`[farm] scheduler`: served renders run there, like `milimo render --farm`)."""
    config = settings.config
    return RenderRequest(storyboard="", model=settings.model, out=str(settings.out_root), db=settings.db_url,
                         asset_roots=[str(r) for r in settings.asset_roots] or None, qa=config.qa,
                         farm=config.farm.scheduler)


@flow(name="import-cuts", log_prints=True)
def import_cuts(folder: str, request: RenderRequest) -> list[str]:
    """Render every cut in `folder` not rendered before (by the content of the cut and its shot list), each as
    `request` with that cut. A cut is marked seen only after its render succeeded, so a failed one is tried again
    on the next scan."""
    import hashlib

    from milimo import context as app_context
    from milimo_engine.hashing import file_sha256
    from storyboards.errors import MilimoError

    from .render import render_storyboard

    log = get_run_logger()
    store = app_context.current().store(request.db)
    seen = {(path, sha) for kind, path, sha in store.files_seen() if kind == "cut"}
    rendered = []
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in CUT_SUFFIXES and p.is_file()):
        shot_list = path.with_suffix(".csv")
        prompts = str(shot_list) if shot_list.is_file() and path.suffix.lower() != ".otio" else None
        content = file_sha256(path) if prompts is None else hashlib.sha256(
            f"{file_sha256(path)}:{file_sha256(shot_list)}".encode()).hexdigest()
        if (str(path.resolve()), content) in seen:
            continue
        cut = request.model_copy(update={"storyboard": str(path), "prompts": prompts,
                                         "rate": request.rate if path.suffix.lower() == ".edl" else None})
        try:
            render_storyboard(cut)
        except MilimoError as exc:  # cannot render as it is (file, field, store), or a shot failed: next scan again
            log.error("cut %s did not render; it is tried again on the next scan:\n%s", path.name,
                      "\n".join(exc.lines()))
            continue
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
        deployments.append(import_cuts.to_deployment(
            name="watch", interval=config.serve.watch.interval_s,
            parameters={"folder": str(Path(config.serve.watch.folder).resolve()),
                        "request": watch.model_dump(mode="json")}))
    return deployments


def serve(config: MilimoConfig, settings: Settings) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(config, settings))
