"""The live leaderboard page: static files shipped in the package (`consumer/web/static/`), no build step."""

from __future__ import annotations

from importlib import resources

from consumer.web.server import Request, Response, Router, error_response

__all__ = ["add_page_routes"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_SECURITY = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; frame-ancestors 'none'",
    ),
]


def _load() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("consumer.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


def add_page_routes(router: Router) -> None:
    files = _load()

    async def serve(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return error_response(404, "not found")
        body, content_type = found
        return Response(200, body, content_type, list(_SECURITY))

    async def index(_request: Request) -> Response:
        return await serve("index.html")

    async def static(request: Request) -> Response:
        return await serve(request.params["name"])

    router.add("/", index)
    router.add("/static/{name}", static)
