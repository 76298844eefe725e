"""The web layer: the ops dashboard and the JSON API behind it, served by the agent.

>>> board = Board(config, state, lambda: metric_store)
>>> runner = await start_dashboard("127.0.0.1:9300", board, ensure_token(state_dir))
"""

from verger.web.app import (
    COOKIE,
    cookie_name,
    ensure_token,
    make_app,
    read_token,
    start_dashboard,
    token_path,
)
from verger.web.board import NO_DATA, Board
from verger.web.metrics import METRICS, RANGES

__all__ = [
    "COOKIE",
    "METRICS",
    "NO_DATA",
    "RANGES",
    "Board",
    "cookie_name",
    "ensure_token",
    "make_app",
    "read_token",
    "start_dashboard",
    "token_path",
]
