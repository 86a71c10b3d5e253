"""`milimo serve`: Prefect deployments for scheduled renders, reruns and a watched folder of cuts.

- `render-<storyboard>`: renders a storyboard on a cron schedule (only what is not done).
- `rerun`: `rerender(storyboard, from_shot, overrides)`; trigger it from the Prefect UI or a script
  with `run_deployment("rerender-storyboard/rerun", parameters={...})`.
- `import-cuts`: every `interval_s`, renders each new cut (by content) dropped into the folder.

Config file (TOML):

    [defaults]            # model, out, db for every deployment
    out = "renders"
    [[schedule]]
    storyboard = "storyboards/examples/lighthouse.otio"
    cron = "0 2 * * *"
    [watch]
    folder = "incoming"
    interval_s = 30
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from storyboards.fields import slug

CUT_SUFFIXES = (".otio", ".otioz", ".edl", ".xml")


@dataclass(frozen=True)
class Schedule:
    storyboard: str
    cron: str


@dataclass(frozen=True)
class ServeConfig:
    schedules: tuple[Schedule, ...] = ()
    watch: str | None = None
    interval_s: float = 30.0
    defaults: dict[str, Any] = field(default_factory=dict)  # model, out, db

    @classmethod
    def from_file(cls, path: str | Path) -> "ServeConfig":
        data = tomllib.loads(Path(path).read_text())
        unknown = set(data) - {"schedule", "watch", "defaults"}
        if unknown:
            raise ValueError(f"{path}: unknown sections {sorted(unknown)}; known: schedule, watch, defaults")
        schedules = []
        for i, entry in enumerate(data.get("schedule", [])):
            if not entry.get("storyboard") or not entry.get("cron"):
                raise ValueError(f"{path}: schedule[{i}] needs both storyboard and cron")
            schedules.append(Schedule(str(entry["storyboard"]), str(entry["cron"])))
        watch = data.get("watch") or {}
        defaults = {k: v for k, v in (data.get("defaults") or {}).items() if k in ("model", "out", "db")}
        return cls(tuple(schedules), watch.get("folder"), float(watch.get("interval_s", 30.0)), defaults)

    def with_cli(self, *, storyboard: str | None, cron: str | None, watch: str | None, interval_s: float | None,
                 model: str | None, out: str | None, db: str | None) -> "ServeConfig":
        if bool(storyboard) != bool(cron):
            raise ValueError("--storyboard and --cron go together")
        schedules = self.schedules + ((Schedule(storyboard, cron),) if storyboard else ())
        defaults = {**self.defaults, **{k: v for k, v in (("model", model), ("out", out), ("db", db)) if v}}
        return replace(self, schedules=schedules, watch=watch or self.watch,
                       interval_s=interval_s or self.interval_s, defaults=defaults)


@flow(name="import-cuts", log_prints=True)
def import_cuts(folder: str, model: str | None = None, out: str | None = None, db: str | None = None) -> list[str]:
    """Render every cut in `folder` not seen before (by content); a cut that cannot render is reported once."""
    from milimo_engine.hashing import file_sha256
    from storyboards.errors import MilimoError, ShotsFailed
    from storyboards.store import Store

    from .render import render_storyboard

    log = get_run_logger()
    store = Store.open(db)
    rendered = []
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in CUT_SUFFIXES and p.is_file()):
        if store.seen_file("cut", str(path.resolve()), file_sha256(path)):
            continue
        try:
            render_storyboard(str(path), model=model, out=out, db=db)
            rendered.append(str(path))
        except ShotsFailed as exc:
            log.error("cut %s rendered with failures: %s", path.name, exc)
        except MilimoError as exc:  # a cut that cannot render as it is: the file, a field, the store
            log.error("cut %s cannot render; fix it and drop it again:\n%s", path.name, "\n".join(exc.lines()))
    return rendered


def build_deployments(config: ServeConfig) -> list:
    from .render import render_storyboard, rerender

    deployments = []
    for schedule in config.schedules:
        stem = slug(Path(schedule.storyboard).stem, fallback="storyboard")
        deployments.append(render_storyboard.to_deployment(
            name=f"render-{stem}", cron=schedule.cron,
            parameters={"storyboard": str(Path(schedule.storyboard).resolve()), **config.defaults}))
    deployments.append(rerender.to_deployment(name="rerun", parameters=dict(config.defaults)))
    if config.watch:
        deployments.append(import_cuts.to_deployment(
            name="watch", interval=config.interval_s,
            parameters={"folder": str(Path(config.watch).resolve()), **config.defaults}))
    return deployments


def serve(config: ServeConfig) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(config))
