"""`/healthz` (no credentials) and `/metrics` (Prometheus exposition, any API role)."""

from __future__ import annotations

from fastapi import APIRouter, Response
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
