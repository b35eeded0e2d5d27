"""Start a fleet: create its database and first admin token; run the server."""

from __future__ import annotations

from datetime import UTC, datetime

from tinyops.fleet.server.runtime import load_or_create_server_key
from tinyops.fleet.server.settings import FleetSettings
from tinyops.fleet.store import Store
from tinyops.security.audit import SERVER_ACTOR
from tinyops.security.roles import Role
from tinyops.security.tokens import new_token

ADMIN_TOKEN_NAME = "admin"


def init_fleet(settings: FleetSettings) -> str | None:
    """Create the database (migrations) and the server key; return a new admin token.

    Returns the plaintext of a fresh `admin` API token when the fleet has no live admin
    token yet (it is shown once, keep it), None when one exists already.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url(), settings.data_dir)
    try:
        store.migrate()
        load_or_create_server_key(settings)
        if store.count_api_tokens(Role.ADMIN) > 0:
            return None
        taken = {t.name for t in store.list_api_tokens()}
        name = ADMIN_TOKEN_NAME
        suffix = 1
        while name in taken:
            suffix += 1
            name = f"{ADMIN_TOKEN_NAME}-{suffix}"
        token, digest = new_token("tok_")
        store.create_api_token(name, Role.ADMIN, digest, SERVER_ACTOR, datetime.now(UTC))
        return token
    finally:
        store.close()


def serve(settings: FleetSettings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the server with uvicorn until interrupted (SIGINT/SIGTERM shut down cleanly)."""
    import uvicorn

    from tinyops.fleet.server.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        lifespan="on",
        # One line per request would cost more than a check-in itself.
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
