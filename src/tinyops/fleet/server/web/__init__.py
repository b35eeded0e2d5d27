"""The web dashboard of the fleet server: server-rendered HTML under /ui.

    /ui                         fleet overview: counts by status, release and target;
                                devices, filtered (status, hardware, release, tag)
    /ui/deployments[/<id>]      deployments; one with its phases, progress, devices, audit
                                (pause/resume for roles that may)
    /ui/devices/<id>            info, version history, telemetry charts, logs, commands
                                (a form to send one for roles that may)
    /ui/drift                   per release: features' drift, reference vs current
    /ui/alerts                  firing, pending and resolved alerts
    /ui/login, /ui/logout       a session from an API token (web/session.py)

Design: Jinja2 templates (web/templates, autoescaped) rendered by plain route functions
that call the same store methods as the API routers; charts are inline SVG whose
geometry is computed in Python (web/charts.py), so the pages need no JavaScript beyond
one small progressive-enhancement script, and nothing from the network. Every route
goes through web/access.py: the session names an API token, and that token's role
decides, with the API's permissions, what the page shows and allows. The routes are
kept out of the OpenAPI document: the API is /api/v1, the dashboard is for people.
"""

from __future__ import annotations

from fastapi import FastAPI

from tinyops.fleet.server.web import access, actions, monitoring, pages


def install(app: FastAPI) -> None:
    """Add the dashboard's routes to `app` (`/` redirects to /ui)."""
    for router in (access.router, pages.router, actions.router, monitoring.router):
        app.include_router(router)
    app.include_router(pages.fallback_router)
