"""The side port: Prometheus ``/metrics``, ``/health``, ``/ready``, and mounted applications
(the admin API at ``/admin``).

Served by the WSGI server that prometheus-client itself uses for ``start_http_server`` (a
threading ``wsgiref`` server), so a slow scrape never runs on the order path's event loop.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - wsgiref's name
        pass


HealthFn = Callable[[], tuple[bool, dict[str, object]]]
WsgiApp = WSGIApplication
#: (path, WSGI environ) -> (status line, headers, body), or None when the path is not a page
PageFn = Callable[[str, WSGIEnvironment], tuple[str, list[tuple[str, str]], bytes] | None]


class SidePortServer:
    """HTTP on ``host:port`` in a daemon thread.

    health(): (ok, details) for /health; ready(): (ok, details) for /ready.  Each answers 200
    with a JSON body when ok, 503 otherwise.  routes: more GET paths, each a function returning
    a JSON body (200), e.g. /directory; an exception in it answers 500 with its message.  pages:
    optional handler of other paths (the live book page, monitoring/book_page.py).  apps: WSGI
    applications by path prefix (e.g. "/admin"), each called for its prefix and every path
    below it.
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthFn,
                 ready: HealthFn, routes: dict[str, Callable[[], bytes]] | None = None,
                 pages: PageFn | None = None, apps: Mapping[str, WsgiApp] | None = None) -> None:
        # prometheus-client annotates it as a bare Callable; it is a WSGI application
        metrics_app: WSGIApplication = make_wsgi_app(registry)
        probes = {"/health": health, "/ready": ready}
        json_routes = dict(routes or {})
        mounted = dict(apps or {})

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            for prefix, sub in mounted.items():
                if path == prefix or path.startswith(prefix + "/"):
                    return sub(environ, start_response)
            probe = probes.get(path)
            if probe is None:
                if path == "/metrics":
                    return metrics_app(environ, start_response)
                route = json_routes.get(path)
                if route is not None:
                    try:
                        body, status = route(), "200 OK"
                    except Exception as exc:  # the side port must answer, whatever broke
                        body = json.dumps({"error": str(exc)}).encode()
                        status = "500 Internal Server Error"
                    start_response(status, [("Content-Type", "application/json"),
                                            ("Content-Length", str(len(body)))])
                    return [body]
                page = pages(path, environ) if pages is not None else None
                if page is not None:
                    status, headers, body = page
                    start_response(status, headers + [("Content-Length", str(len(body)))])
                    return [body]
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                paths = ", ".join(["/metrics", "/health", "/ready", *json_routes, *mounted,
                                   "/book/<SYMBOL>"])
                return [f"not found: try {paths}\n".encode()]
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
