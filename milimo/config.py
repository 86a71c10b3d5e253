"""`milimo.toml`: one configuration for every command, validated by pydantic.

Found at `--config FILE`, else `$MILIMO_CONFIG`, else `./milimo.toml`; none is fine (built-in defaults).
`milimo.settings` puts the command line and the environment on top.
Unknown keys are refused with the key named (a typo must not silently fall back to a default).
Relative paths are relative to the file. Command-line options win over the file. The commented sample
is `infra/milimo.toml`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
)

from milimo_engine.limits import DEFAULT_HANDLES, MAX_HANDLES, parse_bytes

if TYPE_CHECKING:
    from milimo_engine.speed import SpeedOptions
from storyboards.errors import ConfigError, MilimoError
from storyboards.schema import suggest
from storyboards.seams import SeamThresholds

CONFIG_NAME = "milimo.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    asset_roots: tuple[Path, ...] = ()  # where storyboard paths (LoRAs, images) may point; default: its folder
    out: Path | None = None  # the output root (default ./renders)
    db: str | None = None  # the store URL (default MILIMO_DB_URL, else sqlite:///renders/milimo.db)
    model: Path | None = None  # the model folder (default: the embedded tiny bundle)


MemoryModeName = Literal["auto", "resident", "release", "fp8", "stream"]


class EngineConfig(_Section):
    memory_mode: MemoryModeName = "auto"  # how a shot's weights sit on its device (milimo_engine.memory)
    # What each device has for a render, e.g. "24GB" (default: what it reports free); the planner fits to it.
    device_memory: PositiveInt | None = None
    # Opt-in speed-ups (milimo_engine.speed): they change numerics or cost start-up time, so each is off by default.
    attention: str = "native"  # diffusers' attention backend: native (torch SDPA), flash, _flash_3, sage, flex
    compile: bool = False  # torch.compile the transformer's repeated blocks
    fuse_distilled: bool = False  # stage 2 with the distilled LoRA fused into the weights (restored exactly after)

    @field_validator("attention")
    @classmethod
    def _backend(cls, value: str) -> str:
        from milimo_engine.speed import ATTENTION_BACKENDS

        if value not in ATTENTION_BACKENDS:
            raise ValueError(f"{value!r} is not one of {list(ATTENTION_BACKENDS)}")
        return value

    def speed(self) -> SpeedOptions:
        from milimo_engine.speed import SpeedOptions

        return SpeedOptions(self.attention, self.compile, self.fuse_distilled)

    @field_validator("device_memory", mode="before")
    @classmethod
    def _amount(cls, value: object) -> object:
        return parse_bytes(value) if isinstance(value, str) else value


class RatesConfig(_Section):
    edl: PositiveFloat | None = None  # the frame rate of EDL timecodes when --rate is not given


class CutsConfig(_Section):
    """How an editor's cut becomes shots, when the command line does not say."""

    shots_track: str | None = None  # the video track whose clips are the shots (default: the first)
    max_shot_frames: PositiveInt | None = None  # a cap on shot length; without one a long shot renders as segments
    handles: int = Field(default=DEFAULT_HANDLES, ge=0, le=MAX_HANDLES)  # frames each take renders past its cut


class ScheduleConfig(_Section):
    storyboard: str
    cron: str
    prompts: str | None = None


class WatchRules(_Section):
    """How a watched folder is scanned (see `flows.watch`)."""

    settle_s: float = Field(default=5.0, ge=0)  # a cut (or its shot list) changed this recently is still being written
    max_attempts: int = Field(default=5, ge=1)  # a cut that failed this often is left until it changes
    backoff_s: float = Field(default=30.0, ge=0)  # the wait after a first failure, doubled after each further one
    backoff_cap_s: float = Field(default=3600.0, ge=0)


class WatchConfig(WatchRules):
    folder: Path
    interval_s: PositiveFloat = 30.0

    def rules(self) -> WatchRules:
        return WatchRules(**{name: getattr(self, name) for name in WatchRules.model_fields})


class ServeConfig(_Section):
    schedule: tuple[ScheduleConfig, ...] = ()
    watch: WatchConfig | None = None


class FarmConfig(_Section):
    """The render farm (issue 13): a Dask scheduler and GPU workers sharing the store and the output root."""

    scheduler: str | None = None  # tcp://host:8786
    prefect_api_url: str | None = None


class DashboardConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    token: str | None = None  # required to bind anything but loopback
    names: tuple[str, ...] = ()  # other host names it is reached by (a DNS name, a proxy's): `Host` must be one of them
    # A person's name -> "sha256:<hex>" of their own token (`milimo dashboard users add NAME` prints it once): a
    # request carrying it acts as that person, whatever name its browser gave.
    users: dict[str, Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]] = {}


NotifyEvent = Literal["storyboard.rendered", "shot.failed", "take.ready_for_review"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("storyboard.rendered", "shot.failed", "take.ready_for_review")


class WebhookConfig(_Section):
    """One receiver (`[[notify.webhooks]]`): a JSON POST per event, retried on a timeout, a refused connection, 429
    or 5xx; never a reason for a render to fail."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS
    timeout_s: PositiveFloat = 5.0
    retries: int = Field(default=3, ge=0, le=10)
    secret: str | None = None  # signs each body: X-Milimo-Signature: sha256=<HMAC-SHA256 of the body>


class NotifyConfig(_Section):
    webhooks: tuple[WebhookConfig, ...] = ()


DeliveryFormat = Literal["prores_hq", "dnxhr_hq", "h264", "png", "exr"]
DEFAULT_NAMING = "{storyboard}_{shot}_{quality}_v{take:03d}"


class DeliveryProfile(_Section):
    """One way a studio takes its renders (`[delivery.NAME]`, `milimo deliver --delivery NAME`): a format, a naming
    template and, for image sequences, the first frame number and whether a QuickTime reference goes beside it."""

    format: DeliveryFormat
    naming: str = DEFAULT_NAMING  # fields: storyboard, shot, take, quality, profile, reel; [A-Za-z0-9._-] around them
    first_frame: int = Field(default=1001, ge=0, le=9_000_000)  # an image sequence's first frame number
    reference: bool = True  # an image sequence gets a ProRes QuickTime of the same frames beside it

    @property
    def sequence(self) -> bool:
        return self.format in ("png", "exr")

    @field_validator("naming")
    @classmethod
    def _naming(cls, value: str) -> str:
        from .naming import check_template

        return check_template(value)


BUILT_IN_DELIVERIES: dict[str, DeliveryProfile] = {
    "preview": DeliveryProfile(format="h264"),
    "editorial": DeliveryProfile(format="prores_hq"),
    "vfx": DeliveryProfile(format="png"),
}


class MilimoConfig(_Section):
    paths: PathsConfig = PathsConfig()
    rates: RatesConfig = RatesConfig()
    engine: EngineConfig = EngineConfig()
    cuts: CutsConfig = CutsConfig()
    qa: SeamThresholds = SeamThresholds()
    serve: ServeConfig = ServeConfig()
    farm: FarmConfig = FarmConfig()
    dashboard: DashboardConfig = DashboardConfig()
    notify: NotifyConfig = NotifyConfig()
    delivery: dict[str, DeliveryProfile] = {}  # beside (or replacing) the built-in preview, editorial and vfx
    source: Path | None = Field(default=None, exclude=True)  # the file it came from

    def deliveries(self) -> dict[str, DeliveryProfile]:
        """Every delivery profile by name: the built-in ones, with the file's on top."""
        return {**BUILT_IN_DELIVERIES, **self.delivery}

    @classmethod
    def find(cls, explicit: str | None = None) -> MilimoConfig:
        """`explicit` (the settings pass --config or $MILIMO_CONFIG), else ./milimo.toml, else the defaults."""
        path = explicit or (CONFIG_NAME if Path(CONFIG_NAME).is_file() else None)
        return cls.read(path) if path else cls()

    @classmethod
    def read(cls, path: str | Path) -> MilimoConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such configuration file", "give --config the path of a milimo.toml")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})",
                              "fix the line it names (infra/milimo.toml is a sample)") from None
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigInvalid(p, exc) from None
        return config.relative_to(p.parent.resolve()).model_copy(update={"source": p})

    def relative_to(self, folder: Path) -> MilimoConfig:
        def at(path: Path | None) -> Path | None:
            return None if path is None else (path.expanduser() if path.expanduser().is_absolute()
                                              else folder / path)

        paths = self.paths.model_copy(update={"asset_roots": tuple(at(r) for r in self.paths.asset_roots),
                                              "out": at(self.paths.out), "model": at(self.paths.model)})
        watch = (
            self.serve.watch.model_copy(update={"folder": at(self.serve.watch.folder)}) if self.serve.watch else None
        )
        schedule = tuple(
            s.model_copy(
                update={
                    "storyboard": str(at(Path(s.storyboard))),
                    "prompts": str(at(Path(s.prompts))) if s.prompts else None,
                }
            )
            for s in self.serve.schedule
        )
        return self.model_copy(
            update={"paths": paths, "serve": self.serve.model_copy(update={"watch": watch, "schedule": schedule})}
        )

    def with_engine(self, overrides: dict) -> MilimoConfig:
        """This config with `overrides` over its [engine] keys, validated (pydantic's ValidationError when one is
        wrong): the command line's flags, or what `milimo worker` hands its Dask workers."""
        engine = EngineConfig.model_validate({**self.engine.model_dump(), **overrides})
        return self.model_copy(update={"engine": engine})


class ConfigInvalid(MilimoError):
    """Every problem of a configuration file, one line each, the key named."""

    def __init__(self, path: Path, exc: ValidationError):
        self.path = path
        self.problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                section = _model_at(error["loc"][:-1])
                guess = suggest(str(error["loc"][-1]), set(section.model_fields)) if section else None
                fix = (
                    f"did you mean {guess!r}?"
                    if guess
                    else f"use one of {sorted(section.model_fields)}"
                    if section
                    else "remove it"
                )
                self.problems.append(f"{path}: {key}: unknown key. Fix: {fix}")
            else:
                self.problems.append(f"{path}: {key}: {error['msg']}. Fix: see infra/milimo.toml for the form")
        super().__init__("; ".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model a location inside MilimoConfig points at (for naming the keys it knows)."""
    model: type[BaseModel] = MilimoConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", ()) + (annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            inner = getattr(candidate, "__args__", ())
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                model = inner[0]
                break
        else:
            return None
    return model


def with_cli(config: MilimoConfig, *, storyboard: str | None, cron: str | None, watch: str | None,
             interval_s: float | None) -> MilimoConfig:
    """The file's [serve] with the command line's schedule and watch folder on top."""
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
        rules = serve.watch.rules().model_dump() if serve.watch else {}
        serve = serve.model_copy(update={"watch": WatchConfig(
            **rules, folder=folder, interval_s=interval_s or (serve.watch.interval_s if serve.watch else 30.0))})
    return config.model_copy(update={"serve": serve})


def with_dashboard_user(text: str, name: str, digest: str) -> str:
    """`text` (a milimo.toml) with `name`'s token hash in `[dashboard.users]`, replacing theirs if any; the rest of
    the file as it was. Refuses what would not read back as a valid configuration."""
    import json

    entry = f"{json.dumps(name, ensure_ascii=False)} = \"{digest}\""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.strip() == "[dashboard.users]"), None)
    if header is None:
        lines += ["", "[dashboard.users]", entry]
    else:
        end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        kept = [line for line in lines[header + 1:end] if name not in _keys(line)]
        lines[header + 1:end] = [entry, *kept]
    new = "\n".join(lines).lstrip("\n") + "\n"
    try:
        MilimoConfig.model_validate(tomllib.loads(new))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"adding {name!r} would leave the configuration invalid ({str(exc).splitlines()[0]})",
                          "fix the file's [dashboard] section first") from None
    return new


def _keys(line: str) -> set[str]:
    try:
        return set(tomllib.loads(line))
    except tomllib.TOMLDecodeError:
        return set()
