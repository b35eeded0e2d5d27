"""`create_app(settings)`: the FastAPI application of the fleet server.

The lifespan opens the runtime (migrations, signing key, in-memory caches) and starts
the background evaluator and the check-in writer, and, when `settings.mqtt_url` is set,
the MQTT bridge (the device protocol over a broker); shutting down stops the bridge
first (it answers the requests it is handling), then the rest, and writes the buffered
check-ins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tinyops.fleet.server.errors import install_error_handlers
from tinyops.fleet.server.middleware import FleetMiddleware
from tinyops.fleet.server.routers import (
    access,
    alerts,
    deployments,
    device,
    devices,
    drift,
    logs,
    releases,
    system,
)
from tinyops.fleet.server.runtime import FleetRuntime
from tinyops.fleet.server.settings import FleetSettings

API_VERSION = "1"


def create_app(settings: FleetSettings) -> FastAPI:
    runtime = FleetRuntime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        bridge = None
        try:
            if settings.mqtt_url is not None:
                from tinyops.fleet.mqtt.bridge import MqttBridge
                from tinyops.fleet.mqtt.topics import Topics, parse_broker_url

                bridge = MqttBridge(
                    runtime, parse_broker_url(settings.mqtt_url), Topics(settings.mqtt_prefix)
                )
                await bridge.start()
            _app.state.mqtt = bridge
            yield
        finally:
            if bridge is not None:
                await bridge.stop()
            await runtime.stop()

    from tinyops import __version__

    app = FastAPI(
        title="tinyops fleet server",
        version=__version__,
        summary="OTA releases, staged rollouts and rollback for tinyops devices "
        f"(protocol v{API_VERSION}, docs/device-protocol.md).",
        lifespan=lifespan,
        # Nothing but /healthz answers without credentials: the OpenAPI document is served
        # by the system router to API tokens, and there is no /docs or /redoc (their pages
        # would load Swagger UI and ReDoc from a CDN).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # The server has its own Prometheus metrics; FastAPI's native OpenTelemetry would
        # otherwise look up the global providers on every request (~5 % of a check-in).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.mqtt = None
    install_error_handlers(app)
    app.add_middleware(
        FleetMiddleware,
        metrics=runtime.metrics,
        max_body_bytes=settings.max_body_bytes,
        max_release_bytes=settings.max_release_bytes,
        fast_paths=device.fast_paths(runtime),
    )
    routers = (device, releases, deployments, devices, logs, drift, alerts, access, system)
    for module in routers:
        app.include_router(module.router)
    # The web dashboard (/ui, and / redirecting to it): after the API, outside OpenAPI.
    from tinyops.fleet.server import web

    web.install(app)
    return app
