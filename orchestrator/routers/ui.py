"""The operator console: static HTML, CSS and JS modules under ``orchestrator/ui``, served at /ui.

The files hold no data and need no key; every number the console shows comes from the JSON API,
which checks ``x-api-key`` as usual. Every /ui response carries a strict Content-Security-Policy
(no inline script or style, nothing from another origin, no framing) and the other headers of
``SECURITY_HEADERS``. See docs/console.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
"""Where the console's files live, inside the package so the wheel and the images carry them."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # frame-ancestors covers current browsers; X-Frame-Options covers the old ones.
    "X-Frame-Options": "DENY",
    # Revalidate on every load so an upgraded API never runs yesterday's JS against today's JSON.
    "Cache-Control": "no-cache",
}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
"""The only kinds of file served; anything else under ui/ answers 404."""

router = APIRouter(tags=["console"], include_in_schema=False)


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _not_found() -> Response:
    return _secured(PlainTextResponse("Not found", status_code=404))


def asset_path(relative: str, root: Path = UI_DIR) -> Path | None:
    """The file ``relative`` names under ``root``, or None when it escapes ``root``, is not a
    file, or is not a kind the console serves."""
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()) or candidate.suffix not in CONTENT_TYPES:
        return None
    return candidate if candidate.is_file() else None


@router.get("/ui")
def console_root() -> Response:
    """Redirect to /ui/ so the page's relative asset and API paths resolve (also behind a prefix)."""
    return _secured(RedirectResponse("ui/", status_code=308))


@router.get("/ui/")
def console_index() -> Response:
    return console_asset("index.html")


@router.get("/ui/{relative:path}")
def console_asset(relative: str) -> Response:
    path = asset_path(relative)
    if path is None:
        return _not_found()
    return _secured(FileResponse(path, media_type=CONTENT_TYPES[path.suffix]))
