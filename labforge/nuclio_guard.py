"""The Nuclio guard: the only way CVAT reaches a Nuclio dashboard, letting through exactly what CVAT asks of it.

Why: Nuclio's dashboard has no authentication and holds the Docker socket, and on its local (Docker) platform a
function name reaches a shell unvalidated (GHSA-jx7q-cpg6-669g, CVSS 10: pkg/platform/local/client/store.go
getResources, `/bin/sh -c "/bin/cat %s"` with <store>/functions/<namespace>/<name>.json, nuclio 1.13.x commit
59fa1656 lines 311-333 and 388-392). CVAT relays any user's text there: `POST /api/lambda/requests` takes `function`
as a free CharField (cvat/apps/lambda_manager/serializers.py 28-29) and LambdaGateway.get() requests
`/api/functions/` + it (views.py 120-121 at dfd505e7, 126-127 at 7972cb4f2). So CVAT talks to this guard instead
(CVAT_NUCLIO_HOST), and the guard forwards only the three requests LambdaGateway makes (views.py 68-155 at
dfd505e7, 74-160 at 7972cb4f2):

- GET /api/functions (list) and GET /api/functions/<name> (one function);
- POST /api/function_invocations with x-nuclio-function-name: <name> and x-nuclio-path: / (invoke via dashboard);

with no query string, and only the x-nuclio-* headers CVAT sets, each value matching what CVAT sends. A name is
forwarded only when it passes the rule Nuclio's fix applies (nuclio PR #4191: Kubernetes' IsQualifiedName, here
without the optional "prefix/" that CVAT never uses; the dashboard refused other names at deploy time already,
pkg/dashboard/resource/function.go 725 at 59fa1656), so no function the dashboard lists is refused.
Namespaces get the same rule (PR #4223, the bypass GHSA-mq8w-f7w8-5rgg), the project a DNS-1123 label
(pkg/platform/abstract/platform.go 842). The invocation endpoint reaches the same sink through its name and
namespace headers (pkg/platform/types.go 160-165), so it is checked too. Anything else gets 400 (bad name or header)
or 403 (a request CVAT never makes: deploys, deletes, projects, the UI) and never reaches the dashboard. CVAT
relays the status to its user (return_response in views.py 1194-1225 at dfd505e7: a requests.HTTPError answers
with the upstream's status code).

The decision is `refusal()` (pure, unit-tested); the rest is a small stdlib HTTP relay, run in a container from
CVAT's own server image (python3 is there: CVAT's Dockerfile installs it, line 130 at dfd505e7, 134 at 7972cb4f2)
by docker-compose.custom.override.yml. Standard library only: it runs with whatever python3 that image has.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 8070  # CVAT's default CVAT_NUCLIO_PORT (cvat/settings/base.py 345-355 at dfd505e7)
# The name part of Kubernetes' qualified name (k8s.io/apimachinery pkg/util/validation IsQualifiedName: 1 to 63
# characters, alphanumeric at both ends, "-", "_" and "." inside): what Nuclio accepts as a function or namespace.
NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# A DNS-1123 label (IsDNS1123Label): a Nuclio project name.
LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
# The x-nuclio-* headers LambdaGateway sends (views.py 85-98 and 136-139 at dfd505e7) and what their values may be.
HEADERS = {
    "x-nuclio-project-name": LABEL,
    "x-nuclio-function-namespace": NAME,
    "x-nuclio-invoke-via": re.compile(r"domain-name"),
    "x-nuclio-invoke-timeout": re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?s"),
    "x-nuclio-function-name": NAME,
    "x-nuclio-path": re.compile(r"/"),
}
FORWARDED = ("content-type", "accept", *HEADERS)
MAX_BODY = 256 * 1024 * 1024  # an invocation carries one frame as base64 (a 100-megapixel PNG fits)
MAX_CALLS = 32  # requests relayed at once; more wait no longer than a client's socket timeout, then get 503
CLIENT_TIMEOUT = 120.0  # seconds a client may sit idle on its connection


def refusal(method: str, target: str, headers) -> tuple[int, str] | None:
    """None when the request is one CVAT makes with names Nuclio could have made; else (status, one-line reason).
    `target` is the raw request target, never decoded: a percent-escape is refused, not interpreted. `headers` is a
    mapping or every (name, value) the client sent: a name given twice (in any case) is refused, since Go's
    dashboard reads the first of them and a check could read another."""
    pairs = list(headers.items()) if hasattr(headers, "items") else list(headers)
    lowered: dict[str, str] = {}
    for key, value in pairs:
        if key.lower() in lowered:
            return 400, f"header {key.lower()} given twice"
        lowered[key.lower()] = value
    for key, value in lowered.items():
        if key.startswith("x-nuclio-"):
            pattern = HEADERS.get(key)
            if pattern is None:
                return 400, f"header {key} is not one CVAT sends"
            if not pattern.fullmatch(value):
                return 400, f"header {key} has a value Nuclio would refuse"
    if "?" in target or "#" in target:
        return 400, "a query string is not part of any request CVAT makes"
    if method == "GET" and target == "/api/functions":
        return None
    if method == "GET" and target.startswith("/api/functions/"):
        name = target[len("/api/functions/"):]
        return None if NAME.fullmatch(name) else (400, "function name is not one Nuclio could have deployed")
    if method == "POST" and target == "/api/function_invocations":
        if "x-nuclio-function-name" not in lowered:
            return 400, "an invocation must name its function"
        return None
    return 403, f"{method} {target[:80]} is not a request CVAT makes"


def _error(status: int, reason: str) -> bytes:
    return json.dumps({"error": reason, "guard": "labforge nuclio guard"}).encode()


class Guard(BaseHTTPRequestHandler):
    upstream: tuple[str, int] = ("nuclio", PORT)
    timeout_s: float = 600.0
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT  # socketserver's per-connection timeout: an idle client does not hold a thread
    calls = threading.BoundedSemaphore(MAX_CALLS)

    def log_message(self, fmt, *args):  # one line per refusal only (below), not per request
        pass

    def _answer(self, status: int, body: bytes, ctype: str = "application/json", close: bool = False) -> None:
        if close:  # after a refusal the rest of what the client sent is not read as another request
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        if self.headers.get("Transfer-Encoding"):  # CVAT (requests with json=) always sends a Content-Length
            self._answer(411, _error(411, "a body must come with its Content-Length"), close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._answer(413 if length > MAX_BODY else 400, _error(400, "request body too large or its length unreadable"),
                         close=True)
            return
        refused = refusal(self.command, self.path, self.headers.items())
        if refused is not None:
            status, reason = refused
            sys.stderr.write(f"labforge nuclio guard: refused {self.command} {self.path[:200]!r}: {reason}\n")
            self._answer(status, _error(status, reason), close=True)
            return
        body = self.rfile.read(length) if length else b""
        if not self.calls.acquire(timeout=CLIENT_TIMEOUT):
            self._answer(503, _error(503, f"more than {MAX_CALLS} calls at once"), close=True)
            return
        try:
            self._relay(body)
        finally:
            self.calls.release()

    def _relay(self, body: bytes) -> None:
        headers = {key.lower(): value for key, value in self.headers.items() if key.lower() in FORWARDED}
        conn = http.client.HTTPConnection(*self.upstream, timeout=self.timeout_s)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
        except OSError as exc:
            self._answer(502, _error(502, f"Nuclio dashboard unreachable: {exc}"))
            return
        finally:
            conn.close()
        self._answer(reply.status, data, reply.getheader("Content-Type") or "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def upstream_from(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"labforge nuclio guard: LABFORGE_NUCLIO_UPSTREAM must be host:port, got {value!r}")
    return host, int(port)


def main() -> None:
    Guard.upstream = upstream_from(os.environ.get("LABFORGE_NUCLIO_UPSTREAM", f"nuclio:{PORT}"))
    Guard.timeout_s = float(os.environ.get("LABFORGE_NUCLIO_TIMEOUT", "600"))
    server = ThreadingHTTPServer(("", int(os.environ.get("LABFORGE_NUCLIO_GUARD_PORT", PORT))), Guard)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `docker stop` ends it at once
    server.serve_forever()


if __name__ == "__main__":
    main()
