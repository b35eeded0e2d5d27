"""Who is looking: login, logout, and the guard every dashboard route goes through.

The dashboard has no users of its own: one logs in with an API token, and the session
(web/session.py) acts with that token's name and role, exactly as the API would. So the
permissions are the API's (tinyops.security.roles), checked per request against the
token as it is now (revoked → logged out), and what the dashboard changes is audited
under the token's actor (`token:<name>`) by the same store calls the API makes.

`guard` / `guard_action` wrap every route: not logged in → 303 to the login page (never
data); logged in without the permission → 403 page; an action without the session's
CSRF token → 403; malformed parameters → 4xx page naming them; the store's refusals
(404, 409, ...) → the same status as an HTML page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from tinyops.fleet.rollout import InvalidTransition
from tinyops.fleet.server.auth import ApiIdentity, Runtime
from tinyops.fleet.server.runtime import FleetRuntime
from tinyops.fleet.server.web import params
from tinyops.fleet.server.web.render import error_page, render
from tinyops.fleet.server.web.session import (
    LOGIN_COOKIE,
    LOGIN_MAX_AGE_S,
    SESSION_COOKIE,
    Session,
    SessionSigner,
    load_or_create_secret,
)
from tinyops.fleet.store.errors import FleetError
from tinyops.security.roles import Permission, PermissionDenied, Role, allows
from tinyops.security.tokens import hash_token

router = APIRouter(include_in_schema=False)

LOGIN_PATH: Final = "/ui/login"
# API tokens are tok_ + 43 characters; anything far longer is not one.
MAX_TOKEN_CHARS: Final = 128
_signer_lock = threading.Lock()


@dataclass(frozen=True)
class Viewer:
    """The logged-in API token: its name and role, and the session's CSRF token."""

    token_id: int
    name: str
    role: Role
    csrf: str

    def can(self, permission: str) -> bool:
        return allows(self.role, Permission(permission))

    @property
    def identity(self) -> ApiIdentity:
        """The same identity an API request with the token would have (actor, role)."""
        return ApiIdentity(self.name, self.role)


def signer(request: Request) -> SessionSigner:
    """The app's signer, its secret read (or made) once, at the first dashboard request."""
    state = request.app.state
    existing = getattr(state, "web_signer", None)
    if isinstance(existing, SessionSigner):
        return existing
    with _signer_lock:
        existing = getattr(state, "web_signer", None)
        if not isinstance(existing, SessionSigner):
            rt: FleetRuntime = state.runtime
            existing = SessionSigner(load_or_create_secret(rt.settings.data_dir))
            state.web_signer = existing
        return existing


def _now() -> int:
    return int(time.time())


def current_viewer(request: Request, rt: FleetRuntime) -> Viewer | None:
    """The viewer of a valid session whose token is still live; None otherwise."""
    sign = signer(request)
    session: Session | None = sign.read(request.cookies.get(SESSION_COOKIE), _now())
    if session is None:
        return None
    # Tokens are few (people and CI jobs): a scan costs less than a cache to invalidate.
    for token in rt.store.list_api_tokens():
        if token.id == session.token_id:
            if token.revoked_at is not None:
                return None
            return Viewer(token.id, token.name, token.role, sign.csrf(session))
    return None


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/ui"
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(params.next_path(target))}", 303)


def _refusal(request: Request, exc: Exception, viewer: Viewer | None) -> Response:
    if isinstance(exc, params.BadParam):
        return error_page(request, exc.status, str(exc), viewer, exc.field)
    if isinstance(exc, FleetError):
        return error_page(request, exc.status, exc.message, viewer, exc.field)
    if isinstance(exc, InvalidTransition):
        return error_page(request, 409, str(exc), viewer, "status")
    if isinstance(exc, PermissionDenied):
        return error_page(request, 403, str(exc), viewer)
    raise exc


REFUSALS: Final = (params.BadParam, FleetError, InvalidTransition, PermissionDenied)


def guard(
    request: Request,
    rt: FleetRuntime,
    permission: Permission,
    build: Callable[[Viewer], Response],
) -> Response:
    """Run a page's `build` for a logged-in viewer with `permission` (sync routes)."""
    viewer = current_viewer(request, rt)
    if viewer is None:
        return login_redirect(request)
    try:
        if not viewer.can(permission):
            raise PermissionDenied(viewer.role, permission)
        return build(viewer)
    except REFUSALS as exc:
        return _refusal(request, exc, viewer)


async def guard_action(
    request: Request,
    rt: FleetRuntime,
    permission: Permission,
    act: Callable[[Viewer, dict[str, str]], Awaitable[Response]],
) -> Response:
    """Run a form action for a logged-in viewer with `permission` and a valid CSRF token."""
    viewer = await run_in_threadpool(current_viewer, request, rt)
    if viewer is None:
        return login_redirect(request)
    try:
        if not viewer.can(permission):
            raise PermissionDenied(viewer.role, permission)
        form = params.parse_form(await request.body(), request.headers.get("content-type"))
        submitted = form.pop("csrf", None)
        session = signer(request).read(request.cookies.get(SESSION_COOKIE), _now())
        if session is None or not signer(request).csrf_ok(session, submitted):
            return error_page(
                request,
                403,
                "the form's CSRF token is missing or wrong: reload the page and try again",
                viewer,
                "csrf",
            )
        return await act(viewer, form)
    except REFUSALS as exc:
        return _refusal(request, exc, viewer)


def _cookie_secure(request: Request) -> bool:
    # Secure when served over HTTPS (directly or via a proxy that says so); over plain
    # HTTP on loopback a Secure cookie would never come back.
    return (
        request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )


def _login_form(
    request: Request, next_path: str, status: int = 200, message: str | None = None
) -> Response:
    sign = signer(request)
    nonce = sign.login_nonce(_now())
    response = render(
        request,
        "login.html",
        status=status,
        next_path=next_path,
        csrf=sign.login_csrf(nonce),
        message=message,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_MAX_AGE_S,
        path=LOGIN_PATH,
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )
    return response


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", 303)


@router.get(LOGIN_PATH)
def login_page(request: Request, rt: Runtime) -> Response:
    next_path = params.next_path(request.query_params.get("next"))
    if current_viewer(request, rt) is not None:
        return RedirectResponse(next_path, 303)
    return _login_form(request, next_path)


@router.post(LOGIN_PATH)
async def login(request: Request, rt: Runtime) -> Response:
    try:
        form = params.parse_form(await request.body(), request.headers.get("content-type"))
    except params.BadParam as exc:
        return error_page(request, exc.status, str(exc), None, exc.field)
    next_path = params.next_path(form.get("next"))
    sign = signer(request)
    if not sign.login_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf"), _now()):
        return _login_form(
            request, next_path, 403, "The login form expired or came from elsewhere: try again."
        )
    token = form.get("token", "").strip()
    if not token:
        return _login_form(request, next_path, 422, "token: paste an API token (tok_...).")
    if len(token) > MAX_TOKEN_CHARS:
        return _login_form(request, next_path, 422, "token: this is too long to be an API token.")
    record = await run_in_threadpool(rt.store.api_token, hash_token(token))
    if record is None:
        return _login_form(
            request,
            next_path,
            401,
            "token: unknown or revoked API token (device tokens do not open the dashboard).",
        )
    response = RedirectResponse(next_path, 303)
    response.set_cookie(
        SESSION_COOKIE,
        sign.issue(record.id, _now()),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


@router.post("/ui/logout")
async def logout(request: Request, rt: Runtime) -> Response:
    async def act(_viewer: Viewer, _form: dict[str, str]) -> Response:
        response = RedirectResponse(LOGIN_PATH, 303)
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    return await guard_action(request, rt, Permission.READ, act)
