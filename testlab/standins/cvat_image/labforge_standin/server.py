"""TEST STAND-IN, role server (cvat/server): `init run server` (v2.73.0: `init run server nginx`) creates keys/secret_key.py once as
CVAT does (cvat/settings/base.py at dfd505e7, generate_secret_key: /home/django/keys, the cvat_keys volume), then,
as CVAT's `init`, waits for cvat_db and applies its release's migrations (MIGRATIONS: its few CVAT-like tables
engine_task, engine_job, engine_labeledshape, recorded in django_migrations; v2.73.0 adds a column and a
constraint) the way CVAT connects to it (CVAT_POSTGRES_HOST/_PORT/_DBNAME/_USER/_PASSWORD, defaults cvat_db, 5432,
cvat, root, ''; Debian's psql); a failing migration ends the process, and only then does it answer on :8080.
The release is the image's (LABFORGE_STANDIN_RELEASE). Its own endpoints (not CVAT's API) write and
read real data, JSON in and out:
  POST /api/labforge-standin/annotations {"count": N} -> 201 {"task_id", "job_id", "inserted": N, "rows",
       "checksum", "tasks", "jobs"}: one task with one job holding N shapes (one INSERT ... generate_series);
  GET  /api/labforge-standin/annotations -> 200 {"rows", "checksum", "tasks", "jobs"}: rows is the number of
       engine_labeledshape rows, checksum the md5 of all of them in id order (CHECKSUM);
  POST /api/labforge-standin/media {"name": "1/raw/x.jpg", "bytes": N} (N random bytes) or {"name", "content":
       text} or {"name", "content": base64, "encoding": "base64"} -> 201 {"name", "path", "bytes", "sha256"}:
       a file under /home/django/data/data (the cvat_data volume);
  GET  /api/labforge-standin/media -> 200 {"directory", "files": {name: {"bytes", "sha256"}}};
  GET  /api/labforge-standin/secret-key -> 200 {"path", "exists", "sha256"}.
  POST /api/labforge-standin/tasks {"bytes": N} -> 201 {"id"}: a task whose media (N random bytes) is written
       under <id>/raw before its row is committed; DELETE /api/labforge-standin/tasks/<id> -> 200: the row first,
       then its media directory (CVAT removes a task's directories once the row's delete commits:
       cvat/apps/engine/signals.py 102-106, 118-129 at dfd505e7). So at every instant each task row has its media;
  GET  /api/labforge-standin/tasks -> 200 {"tasks": {id: media bytes, or null when its media is missing}} (the
       tasks POST /tasks made).
The database endpoints answer 503 {"detail"} while the database cannot be reached, 400 on a bad body.
It also answers CVAT's /api/server/about, and CVAT's lambda API the way
CVAT v2.51.0's lambda manager does it (cvat/apps/lambda_manager/views.py at dfd505e7, LambdaGateway): functions are
listed through the Nuclio dashboard (GET {CVAT_NUCLIO_SCHEME}://{CVAT_NUCLIO_HOST}:{CVAT_NUCLIO_PORT}/api/functions
with x-nuclio-project-name: cvat, x-nuclio-function-namespace: nuclio, x-nuclio-invoke-via: domain-name; the host
defaults to "nuclio" in cvat/settings/production.py, the rest in cvat/settings/base.py 345-355) and invoked with
CVAT_NUCLIO_INVOKE_METHOD `direct` (the default outside Kubernetes): POST http://host.docker.internal:<the
function's status.httpPort> (`_invoke_directly`), or `dashboard`: POST /api/function_invocations with
x-nuclio-function-name and x-nuclio-path (`_invoke_via_dashboard`). No login is asked for there (CVAT asks for
one): those endpoints are for the lab's tests of which addresses reach what. A request that accepts only
application/vnd.cvat+json, as CVAT's clients send (labforge.tools.cvat_check), gets the part of CVAT's REST API
that cvat_check uses instead (testlab/standins/cvat_api.py, copied into the image): a login checked against the
admin labforge created (manage.py createsuperuser), tasks with uploaded frames, and the lambda API over the same
dashboard, each function's kind and name from its metadata.annotations (LambdaFunction.__init__ at dfd505e7), an
interactor called with the frame and the clicks (image, pos_points, neg_points, obj_bbox). `run worker ...` idles.
Two lambda endpoints as CVAT has them, its unsafe relay included: POST /api/lambda/requests {"function", "task"}
validates `function` only as a CharField (serializers.py 28-29 at dfd505e7) and calls LambdaGateway.get(function),
GET <nuclio>/api/functions/ + function, the URL quoted as `requests` quotes it (requests.utils.requote_uri), and
answers the dashboard's status when it is an error (return_response, views.py 1194-1225; RequestViewSet.create
1398-1421); POST /api/lambda/functions/<id> takes ids matching lookup_value_regex "[a-zA-Z0-9_.-]+" only (views.py
1244 at dfd505e7, 1324 at 7972cb4f2), a 404 otherwise, as Django's router answers. Unchanged at 7972cb4f2.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys

from labforge_standin import MARK
from labforge_standin.common import Quiet, http_json, requests_quoted
from labforge_standin.cvat_data import (
    DatabaseError,
    Schema,
    add_annotations,
    add_task,
    annotation_rows,
    delete_task,
    list_media,
    list_tasks,
    secret_key,
    write_media,
)

STANDIN_API = "/api/labforge-standin"


class Server(Quiet):
    api_url = ""  # the CVAT API wing (cvat_api.CvatStandin in this process), set by main()

    def relay_to_cvat_api(self) -> bool:
        """CVAT's clients accept application/vnd.cvat+json only: they get the CVAT API wing."""
        if self.headers.get("Accept") != "application/vnd.cvat+json" or not self.api_url:
            return False
        host, port = self.api_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization", "content-type")}
        conn.request(self.command, self.path, body=self.body() or None, headers=headers)
        reply = conn.getresponse()
        self.answer(reply.status, reply.read(), reply.getheader("Content-Type") or "application/json")
        return True

    def do_DELETE(self):
        if self.relay_to_cvat_api():
            return
        path = self.path.split("?")[0].rstrip("/")
        if path.startswith(STANDIN_API + "/"):
            self.standin("DELETE", path[len(STANDIN_API):], b"")
        else:
            self.answer(404, b'{"detail": "Not found."}')

    def do_GET(self):
        if self.relay_to_cvat_api():
            return
        path = self.path.split("?")[0].rstrip("/")
        if path == "/api/server/about":
            about = {"name": "Computer Vision Annotation Tool", "description": MARK,
                     "version": os.environ.get("LABFORGE_STANDIN_RELEASE", "v2.51.0").lstrip("v")}
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
        elif path.startswith(STANDIN_API + "/"):
            self.standin("GET", path[len(STANDIN_API):], b"")
        else:
            self.answer(404, b'{"detail": "Not found."}')

    def standin(self, method: str, path: str, payload: bytes) -> None:
        """The stand-in's data endpoints (not CVAT's API): annotations in PostgreSQL, media and the key on disk."""
        try:
            doc = json.loads(payload or b"{}")
            if (method, path) == ("GET", "/annotations"):
                Schema.wait()
                found = annotation_rows()
            elif (method, path) == ("POST", "/annotations"):
                count = doc.get("count")
                if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= 10_000_000:
                    raise ValueError("count must be an integer from 1 to 10000000")
                Schema.wait()
                found = add_annotations(count)
            elif (method, path) == ("GET", "/media"):
                found = list_media()
            elif (method, path) == ("POST", "/media"):
                content = doc.get("content")
                if content is not None:
                    content = base64.b64decode(content, validate=True) if doc.get("encoding") == "base64" else content.encode()
                size = doc.get("bytes")
                if content is None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                    raise ValueError("give bytes (a size, random content) or content")
                found = write_media(doc.get("name"), size, content)
            elif (method, path) == ("GET", "/secret-key"):
                found = secret_key()
            elif (method, path) == ("GET", "/tasks"):
                Schema.wait()
                found = list_tasks()
            elif (method, path) == ("POST", "/tasks"):
                size = doc.get("bytes")
                if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 1 << 30:
                    raise ValueError("bytes must be an integer from 1 to 2**30")
                Schema.wait()
                found = add_task(size)
            elif method == "DELETE" and re.fullmatch(r"/tasks/\d+", path):
                Schema.wait()
                found = delete_task(int(path.rsplit("/", 1)[1]))
            else:
                self.answer(404, b'{"detail": "Not found."}')
                return
        except (ValueError, TypeError, AttributeError) as exc:
            self.answer(400, json.dumps({"detail": str(exc)}).encode())
            return
        except (DatabaseError, subprocess.TimeoutExpired) as exc:
            self.answer(503, json.dumps({"detail": str(exc)}).encode())
            return
        self.answer(201 if method == "POST" else 200, json.dumps(found).encode())

    def do_POST(self):
        if self.relay_to_cvat_api():
            return
        path = self.path.split("?")[0].rstrip("/")
        payload = self.body()
        if path.startswith(STANDIN_API + "/"):
            self.standin("POST", path[len(STANDIN_API):], payload)
            return
        if path == "/api/lambda/requests":
            self.lambda_request(payload)
            return
        if not path.startswith("/api/lambda/functions/"):
            self.answer(404, b'{"detail": "Not found."}')
            return
        name = path.rsplit("/", 1)[1]
        if not re.fullmatch(r"[a-zA-Z0-9_.-]+", name):  # FunctionViewSet.lookup_value_regex
            self.answer(404, b'{"detail": "Not found."}')
            return
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


    def lambda_request(self, payload: bytes) -> None:
        """RequestViewSet.create: the serializer checks `function` is a string and `task` an integer, then
        LambdaGateway.get(function); an HTTP error of the dashboard is answered with its status (return_response)."""
        try:
            doc = json.loads(payload or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("function"), str) or not doc["function"] \
                or not isinstance(doc.get("task"), int):
            self.answer(400, b'{"function": ["This field is required."]}')
            return
        try:
            code, _ = http_json("GET", *nuclio_address(), requests_quoted("/api/functions/" + doc["function"]),
                                     headers=NUCLIO_HEADERS)
        except OSError as exc:
            self.answer(503, json.dumps(str(exc)).encode())
            return
        if code >= 400:
            self.answer(code, json.dumps(f"{code} Client Error for url: /api/functions/{doc['function']}").encode())
            return
        self.answer(200, json.dumps({"id": f"lambda:{doc['task']}", "function": {"id": doc["function"]},
                                     "status": "queued"}).encode())


class LambdaFunctions:
    """CVAT's functions for the CVAT API wing, as the lambda manager builds them: listed through the dashboard at each
    request, each with its kind and name from metadata.annotations, called through invoke()."""

    def __init__(self) -> None:
        self.api = None  # the CvatStandin whose tasks hold the frames

    def items(self) -> list[tuple[str, tuple[dict, object]]]:
        return [(name, self.entry(f)) for name, f in dashboard_functions().items()]

    def __getitem__(self, name: str) -> tuple[dict, object]:
        return self.entry(dashboard_functions()[name])

    def entry(self, function: dict) -> tuple[dict, object]:
        notes = function["metadata"].get("annotations") or {}
        fields = {"kind": notes.get("type", "unknown"), "name": notes.get("name", function["metadata"]["name"]),
                  "description": "", "labels_v2": []}

        def call(data: dict) -> object:
            _, frame = self.api.tasks[data["task"]]["frames"][data["frame"]]
            payload = {"image": base64.b64encode(frame).decode(),
                       **{key: data[key] for key in ("pos_points", "neg_points", "obj_bbox") if key in data}}
            code, answer = invoke(function, json.dumps(payload).encode())
            if code != 200:
                raise OSError(f"function {function['metadata']['name']} answered {code}")
            return json.loads(answer)

        return fields, call


def admin_login(user: str, password: str) -> bool:
    """Whether (user, password) is a superuser manage.py createsuperuser made (the stand-in django store)."""
    sys.path.insert(0, "/opt/labforge-standin")
    from django.contrib.auth import STORE  # the stand-in package: users kept with a sha256 of their password

    rows = json.loads(STORE.read_text()) if STORE.exists() else []
    digest = hashlib.sha256((password or "").encode()).hexdigest()
    return any(r["username"] == user and r["password_sha256"] == digest and r.get("is_superuser") for r in rows)


def cvat_api_wing() -> str:
    sys.path.insert(0, "/opt/labforge-standin/pylib")
    import cvat_api  # testlab/standins/cvat_api.py

    functions = LambdaFunctions()
    functions.api = cvat_api.CvatStandin("", functions, login=admin_login)
    return functions.api.url


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
