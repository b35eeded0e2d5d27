"""Alembic environment of the fleet store.

The server applies migrations itself (`tinyops.fleet.store.engine.upgrade`), handing this
script an open connection in `config.attributes["connection"]`; there is no alembic.ini.
`render_as_batch` lets later migrations alter SQLite tables (SQLite has no ALTER COLUMN:
Alembic copies the table).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from tinyops.fleet.store.schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "fleet migrations need an open connection (config.attributes['connection']) "
            "or the option sqlalchemy.url"
        )
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("fleet migrations run online only, against a live database")
run_migrations_online()
