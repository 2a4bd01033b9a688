"""The web console at ``/ui``: static HTML, CSS and JavaScript shipped inside the package (``service/ui``).

Served by the API itself, so there is no second server and nothing to build: the console is a client of the
public API like any other, with the same keys. Every response under ``/ui`` carries a Content-Security-Policy
that allows scripts and styles from this origin only (no inline script, no eval) and API calls to this origin
only, so even a name that slipped past validation cannot run as script. The files themselves are public (the
key is entered in the browser); the data they show comes from the API, which checks the key on every call.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

__all__ = ["CSP", "UI_DIR", "mount_console"]

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag) so an upgraded server's console is picked up at once
]


class _ConsoleFiles(StaticFiles):
    """StaticFiles that adds the console's security headers to every file it serves."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_HEADERS]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/ui/`` (the router redirects ``/ui`` there)."""
    app.mount("/ui", _ConsoleFiles(directory=UI_DIR, html=True), name="ui")
