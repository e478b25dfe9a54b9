"""TEST STAND-IN, role traefik (traefik): routes by the Docker labels of running containers, as Traefik's Docker provider does
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
"""

from __future__ import annotations

import glob
import http.client
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

from labforge_standin.common import Quiet, server
from labforge_standin.docker_api import docker_api

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
