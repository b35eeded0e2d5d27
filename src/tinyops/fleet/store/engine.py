"""Database engines for the fleet store, and the Alembic migrations that build its schema.

SQLite (the default, `<data_dir>/fleet.db`) is tuned for one server process with many
threads:

    journal_mode=WAL     readers never block the writer, nor the writer readers
    synchronous=NORMAL   in WAL mode a commit survives a process crash (SIGKILL); only
                         an OS crash or power loss can drop the last commits, never
                         corrupt the file
    foreign_keys=ON      SQLite ignores REFERENCES unless asked
    busy_timeout         a writer waits for the write lock instead of failing at once

Write transactions start with BEGIN IMMEDIATE: they take the write lock up front, so two
transactions that both read and then write cannot deadlock (in WAL mode a deferred
transaction that tries to upgrade after another writer committed fails at once with
SQLITE_BUSY, whatever the timeout). Reads use a second engine with plain (deferred) BEGIN,
so they run concurrently with a writer.

PostgreSQL is reached by URL (`postgresql://...` or `postgresql+psycopg://...`; psycopg 3
is the driver either way) and uses one engine for both; the store takes row locks
(SELECT ... FOR UPDATE) where a transaction reads state it then changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from tinyops.errors import StoreError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SQLITE_FILE: Final = "fleet.db"
# How long a SQLite writer waits for the write lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Connections kept open per engine: the server's thread pool has 40 workers by default.
POOL_SIZE: Final = 8
POOL_OVERFLOW: Final = 32


@dataclass(frozen=True)
class Engines:
    """The engine for write transactions and the one for reads (the same on PostgreSQL)."""

    write: Engine
    read: Engine
    dialect: str
    """'sqlite' or 'postgresql'."""

    def dispose(self) -> None:
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()


def sqlite_url(data_dir: Path) -> str:
    """The URL of the default database, `<data_dir>/fleet.db`."""
    return f"sqlite:///{(Path(data_dir) / SQLITE_FILE).resolve()}"


def normalize_url(url: str) -> URL:
    """Parse a database URL; `postgresql://` selects psycopg 3. StoreError if unsupported."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"database URL {url!r} is malformed: expected sqlite:///path/fleet.db or "
            "postgresql://user@host:5432/dbname"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        driver = parsed.get_driver_name()
        if driver not in ("psycopg", "psycopg2"):
            raise StoreError(
                f"database URL {parsed.render_as_string(hide_password=True)}: driver {driver!r} "
                "is not supported; use postgresql:// or postgresql+psycopg://"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreError(
                f"database URL {url!r}: an in-memory SQLite database cannot be shared by the "
                "server's threads; give a file path, e.g. sqlite:///data/fleet.db"
            )
        return parsed
    raise StoreError(
        f"database URL {parsed.render_as_string(hide_password=True)}: backend {backend!r} is "
        "not supported; expected sqlite or postgresql"
    )


def _sqlite_engine(url: URL, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own implicit
        # BEGIN would be deferred and would not cover SELECTs).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


def make_engines(url: str) -> Engines:
    """Engines for `url` (see the module docstring); the SQLite file's folder is created."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return Engines(_sqlite_engine(parsed, True), _sqlite_engine(parsed, False), "sqlite")
    engine = create_engine(
        parsed, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True
    )
    return Engines(engine, engine, "postgresql")


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to `revision` (default: the newest) in one transaction."""
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
