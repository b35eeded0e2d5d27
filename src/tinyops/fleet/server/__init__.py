"""The fleet server (FastAPI): the device API and the management API of
docs/device-protocol.md over the fleet store.

    settings    FleetSettings
    app         create_app(settings) -> FastAPI
    bootstrap   init_fleet(settings) -> admin token, serve(settings, host, port)
    runtime     in-memory hot path (device directory, check-in view, write-behind),
                the coalescing rollout evaluator, the server's signing key
    routers/    one router per resource
    auth        tokens and roles → 401/403
    errors      the JSON error body for every error
    middleware  body limits (413) and the latency histogram
    metrics     Prometheus registry and gauges computed at scrape

Importing this package is cheap; FastAPI and the store load with `create_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyops.fleet.server.settings import FleetSettings

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(settings: FleetSettings) -> FastAPI:
    from tinyops.fleet.server.app import create_app as _create_app

    return _create_app(settings)


def init_fleet(settings: FleetSettings) -> str | None:
    from tinyops.fleet.server.bootstrap import init_fleet as _init_fleet

    return _init_fleet(settings)


def serve(settings: FleetSettings, host: str = "127.0.0.1", port: int = 8080) -> None:
    from tinyops.fleet.server.bootstrap import serve as _serve

    _serve(settings, host, port)


__all__ = ["FleetSettings", "create_app", "init_fleet", "serve"]
