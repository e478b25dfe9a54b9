"""The test lab's apt proxy: an HTTP forward proxy on 127.0.0.1, bridged into each lab host's network namespace and
set as the hosts' `apt_proxy` (so the base layer's proxy setting is exercised for real).

Lab hosts have their own network namespace (their Docker's bridge networks must not exist in the machine's), so
apt inside them reaches Debian's archive and the stand-in mirror only through this proxy. Debian's apt-cacher-ng
would do the same, but here it fails to bind ("Error resolving address for binding"). Package files (``.deb``,
immutable by name and version) are cached on disk across runs; index files are always fetched.

    python -m testlab.aptproxy PORT CACHE_DIR ALLOWED_HOST[,ALLOWED_HOST...]

Only plain HTTP to the allowed hosts (Debian's mirror host, 127.0.0.1) is forwarded; anything else gets 403.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailers", "transfer-encoding", "upgrade"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: apt pipelines its requests
    cache: Path
    allowed: set[str]

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.forward(head=True)

    def do_GET(self):
        self.forward(head=False)

    def refuse(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self, head: bool) -> None:
        url = urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.allowed:
            self.refuse(403, f"lab apt proxy: {self.path} is not an allowed target\n")
            return
        cached = self.cache / hashlib.sha256(self.path.encode()).hexdigest()
        if url.path.endswith(".deb") and cached.exists():
            self.send_response(200)
            self.send_header("Content-Length", str(cached.stat().st_size))
            self.send_header("Content-Type", "application/vnd.debian.binary-package")
            self.end_headers()
            if not head:
                with cached.open("rb") as f:
                    shutil.copyfileobj(f, self.wfile)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
            upstream.request(self.command, url.path + (f"?{url.query}" if url.query else ""), headers=headers)
            answer = upstream.getresponse()
        except OSError as exc:
            self.refuse(502, f"lab apt proxy: {exc}\n")
            return
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        body_follows = not head and answer.status not in (204, 304)
        if body_follows and answer.getheader("Content-Length") is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not body_follows:
            answer.read()
            return
        expected = answer.getheader("Content-Length")
        keep = url.path.endswith(".deb") and answer.status == 200 and expected is not None
        tmp = tempfile.NamedTemporaryFile(dir=self.cache, delete=False) if keep else None  # noqa: SIM115 (closed below)
        done = 0
        try:
            while chunk := answer.read(65536):
                if tmp:
                    tmp.write(chunk)
                done += len(chunk)
                self.wfile.write(chunk)
        finally:
            if tmp:
                tmp.close()
                if done == int(expected):  # only whole files go into the cache
                    os.replace(tmp.name, cached)
                else:
                    os.unlink(tmp.name)
            upstream.close()


def main() -> None:
    port, cache, allowed = int(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3].split(","))
    cache.mkdir(parents=True, exist_ok=True)
    Proxy.cache, Proxy.allowed = cache, allowed
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()


if __name__ == "__main__":
    main()
