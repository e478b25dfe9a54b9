"""TEST STAND-IN (labforge test stand-in): the one program of the stand-in images that carry CVAT v2.51.0's image
names in the test lab. Images cannot be pulled there, so each image runs this with its role:

    python3 /labforge_standin.py ROLE [the compose service's command ...]

- server (cvat/server): `init run server` answers CVAT's /api/server/about on :8080; `run worker ...` idles.
- ui (cvat/ui): a page on :8000.
- traefik (traefik): routes :8080 by the Docker labels of running containers, as Traefik's Docker provider does
  (it reads them through the mounted /var/run/docker.sock): `traefik.enable`, `traefik.http.routers.<r>.rule`
  (Host(`...`) with optional PathPrefix(`...`) alternatives), `traefik.http.services.<s>.loadbalancer.server.port`,
  the network named by TRAEFIK_PROVIDERS_DOCKER_NETWORK; the longest matching rule wins (Traefik's default
  priority); no match: 404 "404 page not found".
- function (Nuclio functions, run by the stand-in nuctl): answers POSTs on :8080 with {}.
- sleeper (everything else: databases, OPA, analytics, the Nuclio dashboard): idles until stopped.

Every role exits 0 on SIGTERM, as a container's main process should for `docker stop`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARK = "labforge test stand-in"


def stop(*_):
    sys.exit(0)


def serve(port: int, handler: type[BaseHTTPRequestHandler]) -> None:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("0.0.0.0", port), handler).serve_forever()


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(Quiet):
    def do_GET(self):
        if self.path.rstrip("/") == "/api/server/about":
            about = {"name": "Computer Vision Annotation Tool", "description": MARK, "version": "2.51.0"}
            self.answer(200, json.dumps(about).encode())
        else:
            self.answer(404, b'{"detail": "Not found."}')


class Ui(Quiet):
    def do_GET(self):
        self.answer(200, f"<html><body>CVAT UI ({MARK})</body></html>".encode(), "text/html")


class Function(Quiet):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(200, b"{}")


class DockerSocket(http.client.HTTPConnection):
    def __init__(self, path: str = "/var/run/docker.sock"):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


HOST = re.compile(r"Host\(`([^`]*)`\)")
PATH_PREFIX = re.compile(r"PathPrefix\(`([^`]*)`\)")


def routes() -> list[tuple[int, str, list[str], str, int]]:
    """(priority, host, path prefixes, address, port) for every enabled router of the running containers."""
    docker = DockerSocket()
    docker.request("GET", "/containers/json")
    containers = json.loads(docker.getresponse().read())
    wanted = os.environ.get("TRAEFIK_PROVIDERS_DOCKER_NETWORK", "")
    found = []
    for c in containers:
        labels = c.get("Labels") or {}
        if labels.get("traefik.enable") != "true":
            continue
        networks = c.get("NetworkSettings", {}).get("Networks", {})
        name = next((n for n in networks if n == wanted or n.endswith(f"_{wanted}")), next(iter(networks), None))
        if name is None:
            continue
        address = networks[name]["IPAddress"]
        port = next((int(v) for k, v in labels.items() if k.startswith("traefik.http.services.")
                     and k.endswith(".loadbalancer.server.port")), 80)
        for key, rule in labels.items():
            if key.startswith("traefik.http.routers.") and key.endswith(".rule"):
                rule = " ".join(rule.split())
                host = HOST.search(rule)
                found.append((len(rule), host.group(1) if host else "", PATH_PREFIX.findall(rule), address, port))
    return sorted(found, reverse=True)


class Traefik(Quiet):
    def route(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        for _, want_host, prefixes, address, port in routes():
            if want_host == host and (not prefixes or any(self.path.startswith(p) for p in prefixes)):
                return address, port
        return None

    def relay(self):
        target = self.route()
        if target is None:
            self.answer(404, b"404 page not found\n", "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(*target, timeout=30)
        upstream.request(self.command, self.path, body=body or None, headers=dict(self.headers))
        answer = upstream.getresponse()
        self.answer(answer.status, answer.read(), answer.getheader("Content-Type") or "text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = relay


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    role, args = sys.argv[1], sys.argv[2:]
    if role == "server" and args[-2:] == ["run", "server"]:
        serve(8080, Server)
    elif role == "ui":
        serve(8000, Ui)
    elif role == "traefik":
        address = os.environ.get("TRAEFIK_ENTRYPOINTS_web_ADDRESS", ":8080")  # noqa: SIM112 (CVAT spells it so)
        serve(int(address.rsplit(":", 1)[1]), Traefik)
    elif role == "function":
        serve(8080, Function)
    else:
        signal.pause()


if __name__ == "__main__":
    main()
