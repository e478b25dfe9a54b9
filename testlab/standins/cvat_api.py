"""STAND-IN for the part of CVAT v2.51.0's REST API that labforge.tools.cvat_check uses (a test fixture).

Each behaviour is read from CVAT at commit dfd505e7 and was checked against the real server with
tests/e2e/cvat_check.sh (the workplace's cvat-e2e harness runs CVAT v2.51.0's own Django server):
- only ``Accept: application/vnd.cvat+json`` is rendered, anything else is 406 "Could not satisfy the request
  Accept header." (cvat/settings/base.py DEFAULT_RENDERER_CLASSES -> cvat/apps/engine/renderers.py
  CVATAPIRenderer.media_type; the real server answered exactly that to ``application/json``);
- ``POST /api/auth/login`` {"username", "password"} -> {"key"}; bad credentials -> 400
  (cvat/apps/iam/views.py LoginViewEx, dj-rest-auth); then ``Authorization: Token <key>``, else 401;
- ``GET /api/lambda/functions`` -> a list of LambdaFunction.to_dict() (id, kind, labels_v2, ...);
- ``POST /api/tasks`` -> the task with its id; ``POST /api/tasks/<id>/data`` (multipart, client_files[N]) -> 202
  {"rq_id"}; ``GET /api/requests/<rq_id>`` -> {"status": "queued" ... "finished"} (cvat/apps/engine/views.py);
  ``GET /api/tasks/<id>/data/meta`` -> {"frames": [{"width", "height", "name"}]};
- ``POST /api/lambda/functions/<id>`` {"task", "frame", ...}: a detector's answer is filtered by the default
  label mapping (same names) and converted to {"tags", "shapes": [{"label_id", "points", "type", ...}]}
  (LambdaFunction.invoke, DetectionResultConverter.convert); an interactor's answer is passed through; a tracker
  gets {"shapes", "states": []} on the first call and, when the request has only "states", those states unsigned
  with "shapes" padded with null; the states it answers are JSON-encoded and signed (TimestampSigner: a bad
  signature is 400 "Invalid or expired tracker state"); a missing mandatory argument is 400 (mandatory_arg);
- ``GET /api/labels?task_id=<id>`` -> {"results": [{"id", "name"}]}; ``DELETE /api/tasks/<id>`` -> 204.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import threading
from collections.abc import Callable, Mapping
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MEDIA_TYPE = "application/vnd.cvat+json"


SECRET = b"standin-secret"


def sign(value: str) -> str:
    return value + ":" + hmac.new(SECRET, value.encode(), hashlib.sha256).hexdigest()


def unsign(signed: str) -> str:
    value, _, mac = signed.rpartition(":")
    if not hmac.compare_digest(mac, hmac.new(SECRET, value.encode(), hashlib.sha256).hexdigest()):
        raise ValueError("bad signature")
    return value


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


class CvatStandin:
    """A CVAT API on 127.0.0.1; functions maps an id to (to_dict fields, handler(payload) -> answer). `login`, when
    given, decides whether (username, password) logs in (the lab's stand-in server: the admin labforge created)."""

    def __init__(self, password: str, functions: Mapping[str, tuple[dict, Callable[[dict], object]]],
                 login: Callable[[str, str], bool] | None = None) -> None:
        self.password, self.functions = password, functions
        self.login = login or (lambda user, password: (user, password) == ("admin", self.password))
        self.tasks: dict[int, dict] = {}
        self.deleted: list[int] = []
        self.calls: list[dict] = []
        self.requests: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: object = None) -> None:
                raw = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", MEDIA_TYPE)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def handle_any(self, method: str) -> None:
                raw = self.body()
                if self.headers.get("Accept") != MEDIA_TYPE:
                    return self.reply(406, {"detail": "Could not satisfy the request Accept header."})
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if (method, url.path) == ("POST", "/api/auth/login"):
                    creds = json.loads(raw)
                    if not standin.login(creds.get("username"), creds.get("password")):
                        return self.reply(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
                    return self.reply(200, {"key": "standin-token"})
                if self.headers.get("Authorization") != "Token standin-token":
                    return self.reply(401, {"detail": "Authentication credentials were not provided."})
                if (method, url.path) == ("GET", "/api/lambda/functions"):
                    return self.reply(200, [{"id": fid, **fields} for fid, (fields, _) in standin.functions.items()])
                if (method, url.path) == ("POST", "/api/tasks"):
                    doc = json.loads(raw)
                    tid = len(standin.tasks) + 1
                    labels = [{"id": 100 * tid + i, "name": lab["name"]} for i, lab in enumerate(doc["labels"])]
                    standin.tasks[tid] = {"id": tid, "name": doc["name"], "labels": labels, "frames": []}
                    return self.reply(201, {"id": tid, "name": doc["name"]})
                if method == "POST" and parts[:2] == ["api", "tasks"] and parts[3:] == ["data"]:
                    message = BytesParser(policy=HTTP).parsebytes(
                        f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw)
                    for part in message.iter_parts():
                        if part.get_param("name", header="content-disposition").startswith("client_files["):
                            standin.tasks[int(parts[2])]["frames"].append((part.get_filename(), part.get_payload(decode=True)))
                    rq_id = f"create:task-{parts[2]}"
                    standin.requests[rq_id] = 0
                    return self.reply(202, {"rq_id": rq_id})
                if method == "GET" and parts[:2] == ["api", "requests"]:
                    rq_id = "/".join(parts[2:])
                    standin.requests[rq_id] += 1
                    return self.reply(200, {"id": rq_id, "status": "finished" if standin.requests[rq_id] > 1 else "queued"})
                if method == "GET" and parts[:2] == ["api", "tasks"] and parts[3:] == ["data", "meta"]:
                    frames = []
                    for name, data in standin.tasks[int(parts[2])]["frames"]:
                        width, height = png_size(data)
                        frames.append({"width": width, "height": height, "name": name})
                    return self.reply(200, {"frames": frames, "size": len(frames)})
                if method == "POST" and parts[:3] == ["api", "lambda", "functions"] and len(parts) == 4:
                    return self.call(parts[3], json.loads(raw))
                if (method, url.path) == ("GET", "/api/labels"):
                    task = standin.tasks[int(parse_qs(url.query)["task_id"][0])]
                    return self.reply(200, {"count": len(task["labels"]), "results": task["labels"]})
                if method == "DELETE" and parts[:2] == ["api", "tasks"] and len(parts) == 3:
                    standin.deleted.append(int(parts[2]))
                    standin.tasks.pop(int(parts[2]), None)
                    return self.reply(204)
                return self.reply(404, {"detail": "Not found."})

            def call(self, fid: str, data: dict) -> None:
                standin.calls.append({"function": fid, **data})
                fields, handler = standin.functions[fid]
                task = standin.tasks[data["task"]]
                mandatory = ["frame"] + (["pos_points", "neg_points"] if fields["kind"] == "interactor" else [])
                missing = [name for name in mandatory if name not in data]
                if missing:
                    return self.reply(400, f"`{fid}` lambda function was called without mandatory argument: {missing[0]}")
                if data["frame"] >= len(task["frames"]):
                    return self.reply(400, "The frame is outside the task range")
                if fields["kind"] == "tracker":
                    return self.track(handler, data)
                answer = handler(data)
                if fields["kind"] == "detector":
                    ids = {lab["name"]: lab["id"] for lab in task["labels"]}
                    shapes = [{"label_id": ids[item["label"]], "points": item["points"], "type": item["type"], "frame": data["frame"]}
                              for item in answer if item["label"] in ids]
                    answer = {"version": 0, "tags": [], "shapes": shapes, "tracks": []}
                return self.reply(200, answer)

            def track(self, handler, data: dict) -> None:
                if "states" not in data:
                    payload = {"shapes": data["shapes"], "states": []}
                else:
                    try:
                        states = [json.loads(unsign(state)) for state in data["states"]]
                    except ValueError:
                        return self.reply(400, "Invalid or expired tracker state")
                    payload = {"shapes": [None] * len(states), "states": states}
                answer = handler(payload)
                answer["states"] = [sign(json.dumps(state, separators=(",", ":"))) for state in answer["states"]]
                return self.reply(200, answer)

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

            def do_DELETE(self):
                self.handle_any("DELETE")

        return Handler
