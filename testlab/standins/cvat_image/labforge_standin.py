"""TEST STAND-IN (labforge test stand-in): the one program of the stand-in images that carry CVAT v2.51.0's image
names in the test lab. Images cannot be pulled there, so each image runs this with its role:

    python3 /labforge_standin.py ROLE [the compose service's command ...]

- server (cvat/server): `init run server` answers CVAT's /api/server/about on :8080, and CVAT's lambda API the way
  CVAT v2.51.0's lambda manager does it (cvat/apps/lambda_manager/views.py at dfd505e7, LambdaGateway): functions are
  listed through the Nuclio dashboard (GET {CVAT_NUCLIO_SCHEME}://{CVAT_NUCLIO_HOST}:{CVAT_NUCLIO_PORT}/api/functions
  with x-nuclio-project-name: cvat, x-nuclio-function-namespace: nuclio, x-nuclio-invoke-via: domain-name; the host
  defaults to "nuclio" in cvat/settings/production.py, the rest in cvat/settings/base.py 345-355) and invoked with
  CVAT_NUCLIO_INVOKE_METHOD `direct` (the default outside Kubernetes): POST http://host.docker.internal:<the
  function's status.httpPort> (`_invoke_directly`), or `dashboard`: POST /api/function_invocations with
  x-nuclio-function-name and x-nuclio-path (`_invoke_via_dashboard`). No login is asked for (CVAT asks for one):
  the lab's tests are about which addresses reach what, not CVAT's permissions. `run worker ...` idles.
- ui (cvat/ui): a page on :8000.
- traefik (traefik): routes by the Docker labels of running containers, as Traefik's Docker provider does
  (it reads them through the mounted /var/run/docker.sock): `traefik.enable`, `traefik.http.routers.<r>.rule`
  (Host(`...`) with optional PathPrefix(`...`) alternatives), `.entrypoints` (a router without it is on every
  entrypoint), `.tls` / `.tls.*` (a TLS router answers only on TLS connections, a plain one only on plain ones),
  `traefik.http.services.<s>.loadbalancer.server.port`, the network named by TRAEFIK_PROVIDERS_DOCKER_NETWORK; the
  longest matching rule wins (Traefik's default priority); no match: 404 "404 page not found". Entrypoints come
  from TRAEFIK_ENTRYPOINTS_<name>_ADDRESS, and TRAEFIK_ENTRYPOINTS_<name>_HTTP_REDIRECTIONS_ENTRYPOINT_TO/_SCHEME
  redirects every request of that entrypoint (permanent, Traefik's default: 301 for GET and HEAD, 308 otherwise).
  TLS certificates come from the file provider's directory (TRAEFIK_PROVIDERS_FILE_DIRECTORY): `tls.certificates`
  and `tls.stores.default.defaultCertificate` with certFile/keyFile, the format of CVAT's custom_certificates.md
  (site/content/en/docs/administration/advanced/custom_certificates.md at dfd505e7); without one Traefik serves its
  own self-signed "TRAEFIK DEFAULT CERT", which no client trusts (here: a throwaway self-signed one).
- dashboard (quay.io/nuclio/dashboard): Nuclio's dashboard API on :8070 with no authentication, Nuclio's default
  (cmd/dashboard/main.go: NUCLIO_AUTH_KIND defaults to "nop", nuclio branch 1.13.x commit 59fa1656), acting on the
  host's Docker Engine through the mounted /var/run/docker.sock: GET /api/functions (a map of name to function,
  status.httpPort included, filtered by x-nuclio-project-name), POST /api/functions deploys (runs a function
  container, as nuctl does, answering 202), POST /api/function_invocations forwards to the function's container
  address on its network (the local platform's InternalInvocationURLs: container IP:8080, pkg/platform/local/
  platform.go populateFunctionInvocationStatus).
- function (Nuclio functions, run by the stand-in nuctl or dashboard): answers POSTs on :8080 with
  {"function": <its name>, "received": <bytes>}.
- sleeper (everything else: databases, OPA, analytics): idles until stopped.

Every role exits 0 on SIGTERM, as a container's main process should for `docker stop`.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARK = "labforge test stand-in"
FUNCTION_IMAGE = "labforge-standin/function:latest"


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


def http_json(method: str, url_host: str, port: int, path: str, body: bytes | None = None,
              headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    reply = conn.getresponse()
    return reply.status, reply.read()


class Server(Quiet):
    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/api/server/about":
            about = {"name": "Computer Vision Annotation Tool", "description": MARK, "version": "2.51.0"}
            self.answer(200, json.dumps(about).encode())
        elif path == "/api/lambda/functions":
            try:
                functions = dashboard_functions()
            except OSError as exc:
                self.answer(503, json.dumps({"detail": f"Nuclio dashboard unreachable: {exc}"}).encode())
                return
            listed = [{"id": f["metadata"]["name"], "state": f["status"].get("state"),
                       "port": f["status"].get("httpPort")} for f in functions.values()]
            self.answer(200, json.dumps(listed).encode())
        else:
            self.answer(404, b'{"detail": "Not found."}')

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        payload = self.body()
        if not path.startswith("/api/lambda/functions/"):
            self.answer(404, b'{"detail": "Not found."}')
            return
        name = path.rsplit("/", 1)[1]
        try:
            functions = dashboard_functions()
            if name not in functions:
                self.answer(404, json.dumps({"detail": f"function {name} not found"}).encode())
                return
            code, answer = invoke(functions[name], payload)
        except OSError as exc:
            self.answer(503, json.dumps({"detail": f"function {name} unreachable: {exc}"}).encode())
            return
        self.answer(code, answer)


NUCLIO_HEADERS = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": "nuclio",
                  "x-nuclio-invoke-via": "domain-name"}


def nuclio_address() -> tuple[str, int]:
    return os.environ.get("CVAT_NUCLIO_HOST", "nuclio"), int(os.environ.get("CVAT_NUCLIO_PORT", "8070"))


def dashboard_functions() -> dict:
    code, body = http_json("GET", *nuclio_address(), "/api/functions", headers=NUCLIO_HEADERS)
    if code != 200:
        raise OSError(f"dashboard answered {code}")
    return json.loads(body)


def invoke(function: dict, payload: bytes) -> tuple[int, bytes]:
    if os.environ.get("CVAT_NUCLIO_INVOKE_METHOD", "direct") == "dashboard":
        headers = {**NUCLIO_HEADERS, "x-nuclio-function-name": function["metadata"]["name"], "x-nuclio-path": "/"}
        return http_json("POST", *nuclio_address(), "/api/function_invocations", payload, headers)
    host = "host.docker.internal" if os.path.exists("/.dockerenv") else "localhost"
    return http_json("POST", host, int(function["status"]["httpPort"]), "/", payload)


class Ui(Quiet):
    def do_GET(self):
        self.answer(200, f"<html><body>CVAT UI ({MARK})</body></html>".encode(), "text/html")


class Function(Quiet):
    def do_POST(self):
        received = len(self.body())
        name = os.environ.get("LABFORGE_STANDIN_FUNCTION", "")
        self.answer(200, json.dumps({"function": name, "received": received}).encode())


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


HOST = re.compile(r"Host\(`([^`]*)`\)")
PATH_PREFIX = re.compile(r"PathPrefix\(`([^`]*)`\)")


def routes(entrypoint: str, tls: bool) -> list[tuple[int, str, list[str], str, int]]:
    """(priority, host, path prefixes, address, port) for every enabled router of the running containers that
    serves this entrypoint, TLS routers on TLS entrypoints only and plain ones on plain ones only."""
    _, containers = docker_api("GET", "/containers/json")
    wanted = os.environ.get("TRAEFIK_PROVIDERS_DOCKER_NETWORK", "")
    found = []
    for c in containers or []:
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
            if not (key.startswith("traefik.http.routers.") and key.endswith(".rule")):
                continue
            router = key[:-len(".rule")]
            entrypoints = [e.strip() for e in labels.get(f"{router}.entrypoints", "").split(",") if e.strip()]
            if entrypoints and entrypoint not in entrypoints:
                continue
            router_tls = labels.get(f"{router}.tls") == "true" or any(k.startswith(f"{router}.tls.") for k in labels)
            if router_tls != tls:
                continue
            rule = " ".join(rule.split())
            host = HOST.search(rule)
            found.append((len(rule), host.group(1) if host else "", PATH_PREFIX.findall(rule), address, port))
    return sorted(found, reverse=True)


def entrypoints() -> dict[str, int]:
    found = {}
    for key, value in os.environ.items():
        match = re.fullmatch(r"TRAEFIK_ENTRYPOINTS_(\w+?)_ADDRESS", key)
        if match:
            found[match.group(1)] = int(value.rsplit(":", 1)[1])
    return found


def file_provider_certificate() -> tuple[str, str] | None:
    """The default certificate (or the first one) of the file provider's dynamic configuration files."""
    directory = os.environ.get("TRAEFIK_PROVIDERS_FILE_DIRECTORY")
    if not directory:
        return None
    sys.path.insert(0, "/opt/labforge-standin/pylib")  # the control machine's PyYAML (testlab/standins/cvat.py load_images)
    import yaml

    for path in sorted(glob.glob(os.path.join(directory, "*.yml")) + glob.glob(os.path.join(directory, "*.yaml"))):
        try:
            with open(path) as stream:
                doc = yaml.safe_load(stream) or {}
        except (OSError, yaml.YAMLError):
            continue
        tls = doc.get("tls") or {}
        default = ((tls.get("stores") or {}).get("default") or {}).get("defaultCertificate")
        for cert in [default, *(tls.get("certificates") or [])]:
            if cert and cert.get("certFile") and cert.get("keyFile"):
                return cert["certFile"], cert["keyFile"]
    return None


def traefik_default_certificate() -> tuple[str, str]:
    """A throwaway self-signed certificate, as Traefik's own "TRAEFIK DEFAULT CERT" (trusted by no client)."""
    work = tempfile.mkdtemp()
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
                    "/CN=TRAEFIK DEFAULT CERT", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def traefik_handler(name: str, tls: bool) -> type[BaseHTTPRequestHandler]:
    redirect_to = os.environ.get(f"TRAEFIK_ENTRYPOINTS_{name}_HTTP_REDIRECTIONS_ENTRYPOINT_TO")
    scheme = os.environ.get(f"TRAEFIK_ENTRYPOINTS_{name}_HTTP_REDIRECTIONS_ENTRYPOINT_SCHEME", "https")
    points = entrypoints()

    class Traefik(Quiet):
        def route(self):
            host = (self.headers.get("Host") or "").split(":")[0]
            for _, want_host, prefixes, address, port in routes(name, tls):
                if want_host == host and (not prefixes or any(self.path.startswith(p) for p in prefixes)):
                    return address, port
            return None

        def relay(self):
            if redirect_to:
                host = (self.headers.get("Host") or "").split(":")[0]
                port = points.get(redirect_to, 443)
                default = {"https": 443, "http": 80}.get(scheme)
                location = f"{scheme}://{host}{'' if port == default else f':{port}'}{self.path}"
                self.answer(301 if self.command in ("GET", "HEAD") else 308, b"Moved Permanently", "text/plain",
                            {"Location": location})
                return
            target = self.route()
            if target is None:
                self.answer(404, b"404 page not found\n", "text/plain")
                return
            body = self.body()
            upstream = http.client.HTTPConnection(*target, timeout=60)
            upstream.request(self.command, self.path, body=body or None, headers=dict(self.headers))
            answer = upstream.getresponse()
            self.answer(answer.status, answer.read(), answer.getheader("Content-Type") or "text/plain")

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = relay

    return Traefik


def traefik() -> None:
    """One listener per entrypoint; an entrypoint is TLS when some router names it with TLS on, or it is
    called websecure (Traefik decides per router; for the lab's two entrypoints this is the same)."""
    threads = []
    for name, port in entrypoints().items():
        tls = name == "websecure"
        context = None
        if tls:
            cert, key = file_provider_certificate() or traefik_default_certificate()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        httpd = server(port, traefik_handler(name, tls), context)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()


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
        found[name] = {"metadata": {"name": name, "namespace": labels.get("nuclio.io/namespace", "nuclio"),
                                    "labels": labels, "annotations": {}},
                       "spec": {}, "status": {"state": "ready" if c.get("State") == "running" else "error",
                                              "httpPort": ports[0] if ports else 0},
                       "_networks": {n: v.get("IPAddress") for n, v in ((c.get("NetworkSettings") or {}).get("Networks") or {}).items()}}
    return found


class Dashboard(Quiet):
    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
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


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    role, args = sys.argv[1], sys.argv[2:]
    if role == "server" and args[-2:] == ["run", "server"]:
        serve(8080, Server)
    elif role == "ui":
        serve(8000, Ui)
    elif role == "traefik":
        traefik()
    elif role == "dashboard":
        serve(8070, Dashboard)
    elif role == "function":
        serve(8080, Function)
    else:
        signal.pause()


if __name__ == "__main__":
    main()
