"""Settings, read once: milimo.toml, then the command line on top, and every `MILIMO_*` variable, validated.

Nothing else in milimo reads the environment for its own settings: a process builds one `Settings` (the CLI from
its options, a worker or a deployment from its environment) and hands it down, through the process's `Context`.
A variable that does not parse exits 2 naming it, as a bad key in milimo.toml does.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storyboards.errors import ConfigError
from storyboards.store.db import DEFAULT_URL as DEFAULT_DB_URL

from .config import MilimoConfig

DEFAULT_OUT = "renders"

# variable -> (field, what it holds); every MILIMO_* variable milimo reads is here.
ENVIRONMENT = {
    "MILIMO_DB_URL": ("db_url", "the store's URL"),
    "MILIMO_OUT": ("out_root", "the output root"),
    "MILIMO_CACHE_DIR": ("cache_dir", "the cache folder (models)"),
    "MILIMO_LOCK_DIR": ("lock_dir", "the per-device lock folder"),
    "MILIMO_WORKER_NAME": ("worker_name", "this farm worker's name"),
    "MILIMO_HEARTBEAT_TIMEOUT_S": ("heartbeat_timeout_s", "seconds without a heartbeat before a take is abandoned"),
    "MILIMO_RENDER_RETRIES": ("render_retries", "retries of a transient failure"),
    "MILIMO_RETRY_BACKOFF_S": ("retry_backoff_s", "the first retry's delay in seconds"),
    "MILIMO_LEASE_TTL_S": ("lease_ttl_s", "seconds a shot's lease lasts between renewals"),
    "MILIMO_DASHBOARD_TOKEN": ("dashboard_token", "the dashboard's token"),
    "MILIMO_USER": ("user", "your name, as reviews, notes and pins record it"),
}
# The [engine] section as JSON, over milimo.toml's: what `milimo worker` hands each Dask worker it starts, so the
# worker's --memory-mode, --device-memory and speed flags reach the processes that render.
ENGINE_VARIABLE = "MILIMO_ENGINE"


def default_user() -> str:
    """The login name: who a review, a note or a pin made from this shell is recorded as (--by, MILIMO_USER)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's uid) and no LOGNAME/USER
        return "unknown"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "milimo"


class Settings(BaseModel):
    """Everything a milimo process is configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    config: MilimoConfig = Field(default_factory=MilimoConfig)
    db_url: str = DEFAULT_DB_URL
    out_root: Path = Path(DEFAULT_OUT)
    model: str | None = None
    asset_roots: tuple[Path, ...] = ()
    cache_dir: Path = Field(default_factory=lambda: default_cache_dir(os.environ))
    lock_dir: Path | None = None  # None: <cache_dir>/locks
    worker_name: str | None = None
    heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    render_retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=2.0, ge=0)
    lease_ttl_s: float = Field(default=60.0, gt=0)
    dashboard_token: str | None = None
    user: str = Field(default_factory=default_user, min_length=1, max_length=255)

    @property
    def locks(self) -> Path:
        return self.lock_dir or self.cache_dir / "locks"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @classmethod
    def load(cls, config_path: str | None = None, environ: Mapping[str, str] | None = None,
             **options: Any) -> Settings:
        """Defaults, then the environment, then milimo.toml (`config_path`, else $MILIMO_CONFIG, else
        ./milimo.toml, else none), then `options` (the command line; None means not given): the later wins."""
        env = os.environ if environ is None else environ
        config = MilimoConfig.find(config_path or env.get("MILIMO_CONFIG"))
        if env.get(ENGINE_VARIABLE):
            config = _with_engine(config, env[ENGINE_VARIABLE])
        values: dict[str, Any] = {"config": config, "cache_dir": default_cache_dir(env)}
        for variable, (name, _) in ENVIRONMENT.items():
            if env.get(variable):
                values[name] = env[variable]
        paths = config.paths
        for name, value in (("db_url", paths.db), ("out_root", paths.out), ("model", paths.model)):
            if value:
                values[name] = str(value) if name != "out_root" else Path(value)
        if paths.asset_roots:
            values["asset_roots"] = tuple(paths.asset_roots)
        values.update({k: v for k, v in options.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            problem = exc.errors()[0]
            name = str(problem["loc"][0])
            variable = next((v for v, (f, _) in ENVIRONMENT.items() if f == name), name)
            raise ConfigError(f"{variable}={values.get(name)!r}: {problem['msg']}",
                              f"set {variable} to {ENVIRONMENT.get(variable, (name, 'a valid value'))[1]}") from None


def _with_engine(config: MilimoConfig, text: str) -> MilimoConfig:
    import json

    try:
        return config.with_engine(json.loads(text))
    except ValidationError as exc:  # before ValueError: it is one
        problem = exc.errors()[0]
        detail = f"engine.{problem['loc'][0]}: {problem['msg']}"
    except ValueError as exc:
        detail = str(exc)
    raise ConfigError(f"{ENGINE_VARIABLE}={text!r}: {detail}",
                      f"set {ENGINE_VARIABLE} to a JSON object of [engine] keys, or unset it")


_current: list[Settings] = []


def current() -> Settings:
    """This process's settings: those installed by its entry point, else read once from its environment."""
    if not _current:
        _current.append(Settings.load())
    return _current[-1]


def install(settings: Settings) -> Settings:
    """Make `settings` this process's (the CLI does, once its options are parsed)."""
    _current[:] = [settings]
    return settings
