"""TEST STAND-IN: what every role serves with: a threading HTTP server on 0.0.0.0 (TLS optional), a quiet handler
that answers in one call, and HTTP as CVAT's `requests` sends it.
"""

from __future__ import annotations

import http.client
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def stop(*_):
    sys.exit(0)


def server(port: int, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    httpd = ThreadingHTTPServer(("0.0.0.0", port), handler)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    return httpd


def serve(port: int, handler: type[BaseHTTPRequestHandler]) -> None:
    server(port, handler).serve_forever()


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code: int, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


def requests_quoted(path: str) -> str:
    """A URL path as the `requests` library sends it (requests.utils.requote_uri: these characters stay, the rest is
    %-escaped; a '#' starts the fragment, which is not sent)."""
    from urllib.parse import quote
    return quote(path.split("#", 1)[0], safe="!#$%&'()*+,/:;=?@[]~")


def http_json(method: str, url_host: str, port: int, path: str, body: bytes | None = None,
              headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    reply = conn.getresponse()
    return reply.status, reply.read()
