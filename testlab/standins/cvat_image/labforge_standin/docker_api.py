"""TEST STAND-IN: the Docker Engine API through the mounted /var/run/docker.sock, as traefik's Docker provider and
Nuclio's local platform reach it.
"""

from __future__ import annotations

import http.client
import json
import socket


class DockerSocket(http.client.HTTPConnection):
    def __init__(self, path: str = "/var/run/docker.sock"):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def docker_api(method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    docker = DockerSocket()
    docker.request(method, path, body=json.dumps(body) if body is not None else None,
                   headers={"Content-Type": "application/json"})
    reply = docker.getresponse()
    data = reply.read()
    return reply.status, (json.loads(data) if data.strip() else None)
