"""The web pages the API serves as static files (web/<page>/): plain HTML, CSS and ES modules
that use the public API like any client. Each answer carries a strict Content-Security-Policy
(scripts and connections to this origin alone, no inline script, no eval), so text a page
shows can never run as code even if it were inserted as HTML (it never is)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from settings import PROJECT_ROOT

WEB_ROOT = PROJECT_ROOT / "web"

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class PageFiles(StaticFiles):
    """A page's files, each answered with PAGE_HEADERS."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def mount_pages(app: FastAPI, *pages: str) -> None:
    """Serve web/<page>/ at /<page>/ (index.html for the directory)."""
    for page in pages:
        app.mount(f"/{page}", PageFiles(directory=WEB_ROOT / page, html=True), name=page)
