"""`/healthz` (no credentials), `/metrics` (Prometheus exposition) and `/openapi.json`
(the API's OpenAPI document), both for any API role."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from tinyops.fleet.server.auth import Reader, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import HealthOut

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """Liveness: the process answers HTTP."""
    return HealthOut(status="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **ERROR_RESPONSES},
)
def metrics(who: Reader, rt: Runtime) -> Response:
    """Prometheus text exposition format."""
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi(who: Reader, request: Request) -> dict[str, Any]:
    """The OpenAPI 3 document of this server (FastAPI builds it once and caches it)."""
    spec: dict[str, Any] = request.app.openapi()
    return spec
