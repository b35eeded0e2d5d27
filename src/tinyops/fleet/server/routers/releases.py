"""Releases (`/api/v1/releases`): upload a signed bundle, read the version history.

An upload is written to `<data_dir>/uploads/` (atomically), verified there with
`verify_bundle` against the fleet's trusted keys (signature, every file hash, expiry),
and only then moved to its content address and recorded. A refused bundle leaves nothing
behind. A bundle's drift-monitoring members (monitoring/profile.json and policy.json) are
parsed and kept with the release; a bundle without them stays valid (sketches for it are
then refused with 409).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from tinyops.bundle.bundle import verify_bundle
from tinyops.errors import BundleError, DataError, SignatureError
from tinyops.fleet.server.auth import ApiIdentity, Reader, Runtime, Uploader
from tinyops.fleet.server.drift_service import bundle_monitoring
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import MAX_ID, Name, ReleaseList, ReleaseOut
from tinyops.fleet.server.runtime import FleetRuntime, utcnow
from tinyops.fleet.server.views import release_out
from tinyops.fleet.store import Invalid, ReleaseRecord
from tinyops.store.atomic import atomic_write_bytes, sha256_bytes

router = APIRouter(prefix="/api/v1/releases", tags=["releases"], responses=ERROR_RESPONSES)

UPLOADS_DIR: Final = "uploads"
UPLOAD_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _store_upload(rt: FleetRuntime, data: bytes, who: ApiIdentity) -> tuple[ReleaseRecord, bool]:
    staged = rt.settings.data_dir / UPLOADS_DIR / f"{uuid.uuid4().hex}.tinybundle"
    atomic_write_bytes(staged, data)
    try:
        keys = rt.trusted_public_keys()
        if not keys:
            raise Invalid(
                "the fleet trusts no release-signing key yet: an admin adds one with "
                "POST /api/v1/trusted-keys",
                code="untrusted-key",
            )
        try:
            verified = verify_bundle(staged, keys, now=utcnow())
        except SignatureError as exc:
            raise Invalid(
                str(exc).replace(str(staged), "the uploaded bundle"), code="invalid-signature"
            ) from exc
        except BundleError as exc:
            raise Invalid(
                str(exc).replace(str(staged), "the uploaded bundle"), code="invalid-bundle"
            ) from exc
        from tinyops.targets.catalog import board_ids

        target = verified.manifest.target
        if target not in board_ids():
            raise Invalid(
                f"the bundle's target {target!r} is not a board of the catalog (expected one "
                f"of {', '.join(board_ids())}): no device could ever install it",
                code="invalid-bundle",
                field="manifest.target",
            )
        try:
            # The reference profile and policy of drift monitoring, when the bundle has them.
            monitoring = bundle_monitoring(verified.files)
        except DataError as exc:
            raise Invalid(str(exc), code="invalid-bundle", field="monitoring") from exc
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return rt.store.add_release(
        staged,
        verified.manifest,
        sha256_bytes(data),
        len(data),
        who.actor,
        utcnow(),
        monitoring=monitoring,
    )


@router.post(
    "",
    status_code=201,
    response_model=ReleaseOut,
    responses={200: {"model": ReleaseOut, "description": "The identical release existed."}},
    openapi_extra=UPLOAD_BODY,
)
async def upload_release(
    request: Request, response: Response, who: Uploader, rt: Runtime
) -> ReleaseOut:
    """Upload a `.tinybundle` (the raw bytes as the body)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    if not body:
        raise Invalid(
            "the request body is empty: send the .tinybundle bytes as application/octet-stream",
            code="invalid-bundle",
        )
    record, created = await run_in_threadpool(_store_upload, rt, bytes(body), who)
    if not created:
        response.status_code = 200
    return release_out(record)


@router.get("", response_model=ReleaseList)
def list_releases(
    who: Reader,
    rt: Runtime,
    name: Annotated[Name | None, Query(description="Model name.")] = None,
    target: Annotated[Name | None, Query(description="Board id.")] = None,
) -> ReleaseList:
    """Version history, newest version first."""
    return ReleaseList(releases=[release_out(r) for r in rt.store.list_releases(name, target)])


@router.get("/{release_id}", response_model=ReleaseOut)
def get_release(
    release_id: Annotated[int, Path(ge=1, le=MAX_ID)], who: Reader, rt: Runtime
) -> ReleaseOut:
    return release_out(rt.store.get_release(release_id))
