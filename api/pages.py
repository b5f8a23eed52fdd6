"""The web pages the API serves as static files (web/ at the project root): plain HTML, CSS and
ES modules, each answered with a strict Content-Security-Policy (scripts and connections to this
origin only, no inline script, no eval), `nosniff` and no referrer."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from settings import PROJECT_ROOT, Settings

WEB_ROOT = PROJECT_ROOT / "web"

# What every page may load: its own origin's scripts, styles and API, nothing inline.
_BASE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'self'"
)


def page_headers(*, frame_ancestors: str, frame_src: str = "'none'") -> dict[str, str]:
    """The headers of a page's files: who may frame it, and what it may frame."""
    return {
        "Content-Security-Policy": (
            f"{_BASE_POLICY}; frame-src {frame_src}; frame-ancestors {frame_ancestors}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # The pages change with each release; their API answers are never cached anyway.
        "Cache-Control": "no-cache",
    }


class PageFiles(StaticFiles):
    """StaticFiles whose every answer (a redirect or a 404 too) carries the page's headers."""

    def __init__(self, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory, html=True)
        self.headers = headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.headers)
        return response


def widget_headers(settings: Settings) -> dict[str, str]:
    """The widget opens in an iframe on the app's own site: the sites of
    SWITCHBOARD_CORS_ORIGINS (and this origin's demo) may frame it, no other."""
    return page_headers(frame_ancestors=" ".join(["'self'", *settings.cors_origins]))


def demo_headers() -> dict[str, str]:
    """The demo plays an app's site: it frames the widget, and nobody frames it."""
    return page_headers(frame_ancestors="'none'", frame_src="'self'")
