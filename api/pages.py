"""The web pages the API serves as static files (web/<page>/): plain HTML, CSS and ES modules
that use the public API like any client. Each answer carries a strict Content-Security-Policy
(scripts, connections, images and videos from this origin alone, no inline script, no eval),
so text a page shows can never run as code even if it were inserted as HTML (it never is)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from settings import PROJECT_ROOT, Settings

WEB_ROOT = PROJECT_ROOT / "web"


def page_headers(*, frame_ancestors: str = "'none'", frame_src: str = "'none'") -> dict[str, str]:
    """A page's headers: who may frame it, and what it may frame (by default: nobody, nothing)."""
    return {
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; media-src 'self'; connect-src 'self'; base-uri 'none'; "
        "form-action 'self'; "
        f"frame-src {frame_src}; frame-ancestors {frame_ancestors}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


PAGE_HEADERS = page_headers()


def widget_headers(settings: Settings) -> dict[str, str]:
    """The widget opens in an iframe on the app's own site: the sites of
    SWITCHBOARD_CORS_ORIGINS (and this origin's demo) may frame it, no other."""
    return page_headers(frame_ancestors=" ".join(["'self'", *settings.cors_origins]))


def demo_headers() -> dict[str, str]:
    """The demo plays an app's site: it frames the widget, and nobody frames it."""
    return page_headers(frame_src="'self'")


class PageFiles(StaticFiles):
    """A page's files, each answered with its headers."""

    def __init__(self, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory, html=True)
        self.headers = headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.headers)
        return response


def mount_pages(app: FastAPI, *pages: str, headers: dict[str, str] = PAGE_HEADERS) -> None:
    """Serve web/<page>/ at /<page>/ (index.html for the directory)."""
    for page in pages:
        app.mount(f"/{page}", PageFiles(WEB_ROOT / page, headers), name=page)
