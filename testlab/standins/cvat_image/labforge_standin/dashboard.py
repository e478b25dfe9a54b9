"""TEST STAND-IN, role dashboard (quay.io/nuclio/dashboard): Nuclio's dashboard API on :8070 with no authentication, Nuclio's default
(cmd/dashboard/main.go: NUCLIO_AUTH_KIND defaults to "nop", nuclio branch 1.13.x commit 59fa1656), acting on the
host's Docker Engine through the mounted /var/run/docker.sock: GET /api/functions (a map of name to function,
status.httpPort included, filtered by x-nuclio-project-name), POST /api/functions deploys (runs a function
container, as nuctl does, answering 202), POST /api/function_invocations forwards to the function's container
address on its network (the local platform's InternalInvocationURLs: container IP:8080, pkg/platform/local/
platform.go populateFunctionInvocationStatus). Every release CVAT pins (1.13.0, 1.16.3) carries GHSA-jx7q-cpg6-669g,
and so does this stand-in: each read of a function (GET /api/functions, GET /api/functions/<name>, and an
invocation's x-nuclio-function-name / x-nuclio-function-namespace, pkg/platform/types.go 160-165) runs
`/bin/sh -c "/bin/cat <store>/functions/<namespace>/<name>.json"` through a shell with the name and namespace as
they came (pkg/platform/local/client/store.go 311-333 and 388-392, nuclio 1.13.x commit 59fa1656; the path
decoded as Go's net/http decodes URL.Path), in the container that holds the Docker socket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from labforge_standin import FUNCTION_IMAGE
from labforge_standin.common import Quiet, http_json
from labforge_standin.docker_api import docker_api


def function_containers(project: str | None = None) -> dict:
    """The functions as Nuclio's local platform reports them: name -> {metadata, spec, status}."""
    _, containers = docker_api("GET", '/containers/json?all=1&filters={"label":["nuclio.io/function-name"]}')
    found = {}
    for c in containers or []:
        labels = c.get("Labels") or {}
        if project and labels.get("nuclio.io/project-name") != project:
            continue
        ports = [p.get("PublicPort") for p in c.get("Ports") or [] if p.get("PrivatePort") == 8080 and p.get("PublicPort")]
        name = labels["nuclio.io/function-name"]
        spec = json.loads(labels.get("nuclio.io/function-spec") or "{}")
        found[name] = {"metadata": {"name": name, "namespace": labels.get("nuclio.io/namespace", "nuclio"),
                                    "labels": labels, "annotations": spec.get("annotations") or {}},
                       "spec": {}, "status": {"state": "ready" if c.get("State") == "running" else "error",
                                              "httpPort": ports[0] if ports else 0},
                       "_networks": {n: v.get("IPAddress") for n, v in ((c.get("NetworkSettings") or {}).get("Networks") or {}).items()}}
    return found


LOCAL_STORE = "/etc/nuclio/store"  # the local platform's store (store.go baseDir)


def local_store_read(namespace: str, name: str) -> None:
    """Nuclio's local store reading a function (store.go getResources, 319-333 at 59fa1656): the path of
    <store>/functions/<namespace>/<name>.json (or <namespace>/* for all), formatted into `/bin/sh -c "/bin/cat %s"`
    with nothing validated or quoted (GHSA-jx7q-cpg6-669g; fixed upstream by nuclio PR #4191 and, for the namespace,
    #4223). The store itself is stand-in (functions are read from Docker's labels below); the shell is not."""
    path = "/".join([LOCAL_STORE, "functions", namespace, f"{name}.json" if name else "*"])
    subprocess.run(f'/bin/sh -c "/bin/cat {path}"', shell=True, capture_output=True, timeout=30)


class Dashboard(Quiet):
    def namespace(self) -> str:  # getNamespaceFromRequest: the header, else the default namespace
        return self.headers.get("x-nuclio-function-namespace") or "nuclio"

    def do_GET(self):
        from urllib.parse import unquote
        path = unquote(self.path.split("?")[0]).rstrip("/")  # Go's URL.Path is the decoded path
        if path.startswith("/api/functions"):
            local_store_read(self.namespace(), path[len("/api/functions/"):] if path != "/api/functions" else "")
        if path == "/api/functions":
            found = function_containers(self.headers.get("x-nuclio-project-name"))
            for f in found.values():
                f.pop("_networks")
            self.answer(200, json.dumps(found).encode())
        elif path.startswith("/api/functions/"):
            found = function_containers().get(path.rsplit("/", 1)[1])
            if found is None:
                self.answer(404, b'{"error": "Function not found"}')
                return
            found.pop("_networks")
            self.answer(200, json.dumps(found).encode())
        else:
            self.answer(404, b'{"error": "Not found"}')

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        body = self.body()
        if path == "/api/functions":
            self.deploy(json.loads(body or b"{}"))
        elif path == "/api/function_invocations":
            name = self.headers.get("x-nuclio-function-name")
            local_store_read(self.namespace(), name or "")  # EnrichFunction reads it first (types.go 160-165)
            found = function_containers().get(name or "")
            if found is None:
                self.answer(404, b'{"error": "Function not found"}')
                return
            address = next(iter(found["_networks"].values()), None)
            code, answer = http_json("POST", address, 8080, "/" + (self.headers.get("x-nuclio-path") or "").lstrip("/"), body)
            self.answer(code, answer)
        else:
            self.answer(404, b'{"error": "Not found"}')

    def deploy(self, config: dict) -> None:
        """What Nuclio's local platform does for a deploy, in short: a function container on the project's
        network, its HTTP port published on every interface (nuclio 1.13.x pkg/dockerclient/shell.go RunContainer)."""
        name = ((config.get("metadata") or {}).get("name") or "").strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,55}", name):
            self.answer(400, b'{"error": "Function name is invalid"}')
            return
        labels = {"nuclio.io/platform": "local", "nuclio.io/namespace": "nuclio", "nuclio.io/function-name": name,
                  "nuclio.io/project-name": (config.get("metadata") or {}).get("labels", {}).get("nuclio.io/project-name", "default")}
        network = os.environ.get("LABFORGE_STANDIN_FUNCTION_NETWORK", "cvat_cvat")
        create = {"Image": FUNCTION_IMAGE, "Labels": labels, "Env": [f"LABFORGE_STANDIN_FUNCTION={name}"],
                  "ExposedPorts": {"8080/tcp": {}},
                  "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": ""}]}, "NetworkMode": network}}
        code, created = docker_api("POST", f"/containers/create?name=nuclio-nuclio-{name}", create)
        if code not in (200, 201):
            self.answer(500, json.dumps({"error": f"Failed to deploy function: {created}"}).encode())
            return
        docker_api("POST", f"/containers/{created['Id']}/start")
        self.answer(202, b"")
