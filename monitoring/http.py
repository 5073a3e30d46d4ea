"""The side port: Prometheus ``/metrics``, ``/health`` and ``/ready``.

Served by the WSGI server that prometheus-client itself uses for ``start_http_server`` (a
threading ``wsgiref`` server), so a slow scrape never runs on the order path's event loop.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - wsgiref's name
        pass


HealthFn = Callable[[], tuple[bool, dict[str, object]]]
#: (path, WSGI environ) -> (status line, headers, body), or None when the path is not a page
PageFn = Callable[[str, dict], tuple[str, list[tuple[str, str]], bytes] | None]


class SidePortServer:
    """HTTP on ``host:port`` in a daemon thread.

    health(): (ok, details) for /health; ready(): (ok, details) for /ready.  Each answers 200
    with a JSON body when ok, 503 otherwise.  pages: optional handler of other paths (the live
    book page, monitoring/book_page.py).
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthFn,
                 ready: HealthFn, pages: PageFn | None = None) -> None:
        metrics_app = make_wsgi_app(registry)
        probes = {"/health": health, "/ready": ready}

        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            probe = probes.get(path)
            if probe is None:
                if path == "/metrics":
                    return metrics_app(environ, start_response)
                page = pages(path, environ) if pages is not None else None
                if page is not None:
                    status, headers, body = page
                    start_response(status, headers + [("Content-Length", str(len(body)))])
                    return [body]
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found: try /metrics, /health, /ready, /book/<SYMBOL>\n"]
            ok, details = probe()
            body = json.dumps({"status": "ok" if ok else "unavailable", **details}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]

        self.httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self.httpd.server_port
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hftgw-side-port",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
