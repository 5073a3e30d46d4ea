"""The live book page on the side port: ``GET /book/<SYMBOL>``.

A static HTML + JavaScript page (``monitoring/static/book.html``) that connects to the
market-data WebSocket (``/md`` on ``ws_listen``, same host name as the page), subscribes to the
symbol's BBO, trades and depth in JSON, and keeps the depth ladder with the documented sequence
rule.  The gateway only fills in the symbol and the WebSocket port.
"""
from __future__ import annotations

import json
from pathlib import Path
from wsgiref.types import WSGIEnvironment

PAGE = Path(__file__).with_name("static") / "book.html"
PLACEHOLDER = "/*HFTGW_CONFIG*/null"
PREFIX = "/book/"
LEVELS = 10


class BookPages:
    """Serves ``/book/<SYMBOL>`` for the served symbols; ``symbols`` is the engine's live list
    (kept by reference: symbols are defined from the journal after start and by reloads);
    ``ws_port``: the WebSocket port's TCP port (0 = none: the page answers 404)."""

    def __init__(self, symbols: list[str], ws_port: int) -> None:
        self.symbols = symbols
        self.ws_port = ws_port
        self.template = PAGE.read_text(encoding="utf-8")
        if PLACEHOLDER not in self.template:
            raise RuntimeError(f"{PAGE} lacks {PLACEHOLDER}")

    def __call__(self, path: str, environ: WSGIEnvironment
                 ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        if not path.startswith(PREFIX):
            return None
        symbol = path[len(PREFIX):]
        if symbol not in self.symbols or not self.ws_port:
            body = (f"unknown symbol {symbol!r}: try one of {', '.join(sorted(self.symbols))}\n"
                    if self.ws_port else "the WebSocket port is off (ws_listen)\n")
            return "404 Not Found", [("Content-Type", "text/plain; charset=utf-8")], body.encode()
        cfg = {"symbol": symbol, "wsPort": self.ws_port, "wsPath": "/md", "levels": LEVELS}
        # json.dumps output cannot close the <script> element: symbols are checked above and
        # "</" is escaped anyway
        html = self.template.replace(PLACEHOLDER, json.dumps(cfg).replace("</", "<\\/"))
        return ("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
                html.encode())
