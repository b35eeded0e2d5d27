"""Access (`/api/v1/...`): enrollment tokens, API tokens, trusted release keys, audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Path, Query, Response

from tinyops.bundle.keys import key_id
from tinyops.fleet.server.auth import Admin, DeviceManager, Reader, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import (
    NAME_PATTERN,
    AuditList,
    EnrollmentTokenCreate,
    EnrollmentTokenOut,
    TokenCreate,
    TokenCreated,
    TokenList,
    TrustedKeyCreate,
    TrustedKeyList,
    TrustedKeyOut,
)
from tinyops.fleet.server.runtime import utcnow
from tinyops.fleet.server.views import audit_out, token_out, trusted_key_out
from tinyops.fleet.store import Invalid
from tinyops.fleet.store.store import MAX_PAGE
from tinyops.security.audit import AuditAction
from tinyops.security.tokens import new_token

router = APIRouter(prefix="/api/v1", tags=["access"], responses=ERROR_RESPONSES)


@router.post("/enrollment-tokens", status_code=201, response_model=EnrollmentTokenOut)
def create_enrollment_token(
    body: EnrollmentTokenCreate, who: DeviceManager, rt: Runtime
) -> EnrollmentTokenOut:
    """A fleet enrollment token (shown once) that lets devices enroll themselves."""
    now = utcnow()
    expires = None if body.expires_in_s is None else now + timedelta(seconds=body.expires_in_s)
    token, digest = new_token("etk_")
    record = rt.store.create_enrollment_token(
        body.name, digest, expires, body.max_uses, who.actor, now
    )
    return EnrollmentTokenOut(
        id=record.id,
        name=record.name,
        token=token,
        expires_at=record.expires_at,
        max_uses=record.max_uses,
    )


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, who: Admin, rt: Runtime) -> TokenCreated:
    """An API token with a role (shown once)."""
    token, digest = new_token("tok_")
    record = rt.store.create_api_token(body.name, body.role, digest, who.actor, utcnow())
    return TokenCreated(
        id=record.id, name=record.name, role=record.role, token=token, created_at=record.created_at
    )


@router.get("/tokens", response_model=TokenList)
def list_tokens(who: Admin, rt: Runtime) -> TokenList:
    """API tokens (never their secret)."""
    return TokenList(tokens=[token_out(t) for t in rt.store.list_api_tokens()])


@router.delete("/tokens/{name}", status_code=204, response_class=Response)
def revoke_token(
    name: Annotated[str, Path(pattern=NAME_PATTERN)], who: Admin, rt: Runtime
) -> Response:
    """Revoke an API token: it stops working at once."""
    rt.store.revoke_api_token(name, who.actor, utcnow())
    return Response(status_code=204)


@router.post(
    "/trusted-keys",
    status_code=201,
    response_model=TrustedKeyOut,
    responses={200: {"model": TrustedKeyOut, "description": "The key was trusted already."}},
)
def add_trusted_key(
    body: TrustedKeyCreate, response: Response, who: Admin, rt: Runtime
) -> TrustedKeyOut:
    """Trust an Ed25519 public key (PEM) to sign releases."""
    try:
        key = serialization.load_pem_public_key(body.public_key_pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Invalid(
            f"public_key_pem is not a readable PEM public key ({exc}): expected an Ed25519 "
            "SubjectPublicKeyInfo PEM (the .pub file of `tinyops keys create`)",
            field="public_key_pem",
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise Invalid(
            f"public_key_pem holds a {type(key).__name__}: expected an Ed25519 public key",
            field="public_key_pem",
        )
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    record, created = rt.store.add_trusted_key(key_id(key), body.name, pem, who.actor, utcnow())
    if not created:
        response.status_code = 200
    return trusted_key_out(record)


@router.get("/trusted-keys", response_model=TrustedKeyList)
def list_trusted_keys(who: Reader, rt: Runtime) -> TrustedKeyList:
    return TrustedKeyList(keys=[trusted_key_out(k) for k in rt.store.trusted_keys()])


@router.get("/audit", response_model=AuditList)
def audit(
    who: Reader,
    rt: Runtime,
    target: Annotated[
        str | None,
        Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="e.g. deployment:3"),
    ] = None,
    action: Annotated[AuditAction | None, Query()] = None,
    actor: Annotated[
        str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="token:ci")
    ] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62, description="Older than.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditList:
    """Audit records, newest first; `target` also matches what is under it."""
    records = rt.store.audit_log(
        target=target,
        action=None if action is None else action.value,
        actor=actor,
        before_id=before_id,
        limit=limit,
    )
    return AuditList(records=[audit_out(r) for r in records])
