"""Engines and schema upgrades: SQLite (WAL, foreign keys, busy timeout) by default, PostgreSQL by URL.

Opening a store answers every configuration problem with one StoreError naming the fix: a server
that does not answer, a read-only file, a schema newer than this milimo, a schema with no version
row. None of these is retried; the same database answers the same way until someone fixes it. A connection the
database dropped (a restart, a failover) is another matter: `on_a_fresh_connection` tries the work again, here
for the schema check and in `Store` for every operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from ..errors import StoreError

T = TypeVar("T")
RECONNECT_WINDOW_S = 20.0  # how long a dropped connection is tried again: a PostgreSQL restart or failover

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x6D696C696D6F  # "milimo": the advisory lock that serialises schema upgrades on PostgreSQL
DB_FIX = "point --db (or MILIMO_DB_URL) at a store this milimo can use"


DEFAULT_URL = "sqlite:///renders/milimo.db"


def default_url() -> str:
    """The embedded default; a milimo process gets its URL from its settings (`milimo.settings`)."""
    return DEFAULT_URL


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str, **kwargs) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # noqa: ANN001
            # Take the write lock when the transaction starts: two processes numbering takes then wait
            # for each other (busy timeout) instead of both reading the same max and colliding.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, **kwargs)

    @event.listens_for(engine, "handle_error")
    def _read_only(context):  # noqa: ANN001
        text = str(context.original_exception).lower()
        if "readonly" in text or "read-only" in text or "read only" in text:
            raise StoreError(f"the store {shown(url)} is read-only",
                             "make the database file and its folder writable, or " + DB_FIX) from None

    return engine


def _script():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg, ScriptDirectory.from_config(cfg)


def upgrade(engine: Engine) -> None:
    """Bring the schema to head (an empty database is created); refuse a schema this milimo does not know."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg, script = _script()
    url = shown(str(engine.url))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # two processes opening a new store: one creates, one waits
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        current = MigrationContext.configure(conn).get_current_heads()
        known = {rev.revision for rev in script.walk_revisions()}
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise StoreError(f"the store {url} has schema revision {unknown[0]}, newer than this milimo knows "
                             f"(its newest is {script.get_current_head()})",
                             "upgrade milimo to the version that wrote this store, or " + DB_FIX)
        if not current and "storyboards" in inspect(conn).get_table_names():
            raise StoreError(f"the store {url} has milimo tables but no schema version row (alembic_version)",
                             "if you know its revision, record it with `alembic -c infra/alembic.ini stamp REV`; "
                             "else " + DB_FIX)
        if current and set(current) == {script.get_current_head()}:
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


# What PostgreSQL says when it drops a connection it had accepted (a restart, a failover, pg_terminate_backend), also
# while the connection is being opened, before SQLAlchemy could mark it invalidated. A refused connection is not one.
_DROPPED = ("server closed the connection unexpectedly", "terminating connection due to administrator command")


def lost_connection(exc: BaseException) -> bool:
    """The database dropped the connection (SQLAlchemy invalidated it, or the server closed it while it opened):
    the work may succeed on a new one."""
    if isinstance(exc, DisconnectionError):
        return True
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or any(d in str(exc.orig) for d in _DROPPED))


def on_a_fresh_connection(work: Callable[[], T], window_s: float = RECONNECT_WINDOW_S) -> T:
    """`work` (one transaction), again after a short wait each time the database drops its connection, for up to
    `window_s`: the transaction was rolled back, and the pool hands out a new, pre-pinged connection. A window,
    not a count: a server that drops connections again and again while it restarts gets the same time as one that
    drops them once. A database that refuses connections is not retried (it is down: exit 2 at once)."""
    deadline = time.monotonic() + window_s
    attempt = 0
    while True:
        try:
            return work()
        except (DBAPIError, DisconnectionError) as exc:
            if not lost_connection(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(min(0.1 * 2 ** attempt, 1.0))
            attempt += 1


def open_engine(url: str, **kwargs) -> Engine:
    """An engine at the current schema, or StoreError saying what is wrong with the store and the fix."""
    try:
        engine = make_engine(url, **kwargs)
        on_a_fresh_connection(lambda: upgrade(engine))
        return engine
    except StoreError:
        raise
    except (OperationalError, DBAPIError) as exc:
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise StoreError(f"cannot open the store {shown(url)} ({first})",
                         "start the database server, check the URL, or " + DB_FIX) from None
    except OSError as exc:
        raise StoreError(f"cannot open the store {shown(url)} ({exc.strerror or exc})", DB_FIX) from None
    except Exception as exc:  # a malformed URL, an unknown driver
        if type(exc).__module__.startswith("sqlalchemy"):
            raise StoreError(f"cannot use the store URL {url!r} ({exc})", DB_FIX) from None
        raise
