"""The daemon's HTTP face: health, metrics, the board API (JSON + Server-Sent Events) and the live page.

Built on asyncio streams + h11 (`consumer.web.server`); no web framework in the daemon's runtime.
"""

from consumer.web.board import BoardCollector, BoardService, BoardSource, board_delta, flag_name
from consumer.web.page import add_page_routes
from consumer.web.server import (
    HttpServer,
    Request,
    Response,
    Route,
    Router,
    Stream,
    StreamSink,
    error_response,
    json_response,
)

__all__ = [
    "BoardCollector",
    "BoardService",
    "BoardSource",
    "HttpServer",
    "Request",
    "Response",
    "Route",
    "Router",
    "Stream",
    "StreamSink",
    "add_page_routes",
    "board_delta",
    "error_response",
    "flag_name",
    "json_response",
]
