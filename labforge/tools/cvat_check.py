"""Prove a converged lab through CVAT itself: what an annotator gets, not what `nuctl` says.

`nuctl get functions` talks to the Nuclio platform directly, so it can report `ready` while CVAT, which
lists and calls functions through the Nuclio dashboard, shows no model (cvat-ai/cvat#10013: Docker 29
refused the dashboard's API). This check uses only CVAT's REST API, as the UI does (CVAT v2.51.0 =
commit dfd505e7):

1. log in as the admin: ``POST /api/auth/login`` -> ``{"key"}``, then ``Authorization: Token <key>``
   (cvat/apps/iam/urls.py, LoginViewEx; TokenAuthentication in cvat/settings/base.py);
2. ``GET /api/lambda/functions``: CVAT's own view of Nuclio (cvat/apps/lambda_manager/views.py,
   FunctionViewSet.list -> LambdaGateway.list, which asks the dashboard's /api/functions); every
   expected function id must be there;
3. one real inference: a task whose labels are the detector's (``labels_v2``), one uploaded image
   (``POST /api/tasks/<id>/data``, one multipart "Data request", then ``GET /api/requests/<rq_id>``
   until finished: cvat/apps/engine/views.py TaskViewSet.data), then ``POST /api/lambda/functions/<id>``
   with ``{"task", "frame": 0}`` (FunctionViewSet.call -> LambdaFunction.invoke), which answers the
   detections converted to CVAT shapes (DetectionResultConverter.convert); at least one shape, of the
   expected label when one is given. With an interactor, the same task and one click in the middle of the
   frame (``pos_points``, ``neg_points`` [], ``obj_bbox`` [] as the v2.51.0 UI sends it); CVAT passes the
   function's answer through, which must hold a mask (or points). With a tracker, the image three times as
   a 3-frame task, a rectangle sent on frame 0 and only CVAT's signed states on frames 1 and 2; a rectangle
   must come back on each. The task is deleted afterwards, whatever happened.

The admin password comes from $LABFORGE_CVAT_ADMIN_PASSWORD (never a command-line argument).
Usage: python -m labforge.tools.cvat_check --url http://HOST:8080 --expect ID [--expect ID ...]
                                     [--detector ID [--expect-label NAME]] [--interactor ID] [--tracker ID]
                                     [--image FILE]
Exit 0 when everything holds; otherwise one line saying what is missing, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PASSWORD_ENV = "LABFORGE_CVAT_ADMIN_PASSWORD"


class CheckFailed(Exception):
    """One line for the admin: what CVAT did not do."""


class CvatApi:
    """A small client for the endpoints above; every error becomes one CheckFailed line."""

    def __init__(self, url: str, timeout: float = 120, ca_file: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None
        # https: the system's trust store, or only the given CA (a lab CA: cvat_tls = "lab-ca", its ca.crt)
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def request(self, method: str, path: str, body: dict | None = None, *, data: bytes | None = None,
                content_type: str = "application/json", ok: tuple[int, ...] = (200, 201, 202, 204)) -> object:
        # CVAT renders only its own media type (CVATAPIRenderer in cvat/apps/engine/renderers.py); plain
        # application/json gets 406 "Could not satisfy the request Accept header".
        headers = {"Accept": "application/vnd.cvat+json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        except (urllib.error.URLError, OSError) as err:
            raise CheckFailed(f"CVAT does not answer at {self.url}: {getattr(err, 'reason', err)}") from None
        if status not in ok:
            text = raw.decode(errors="replace").strip().replace("\n", " ")[:300]
            raise CheckFailed(f"{method} {path} answered HTTP {status}: {text}")
        return json.loads(raw) if raw.strip() else None

    def login(self, user: str, password: str) -> None:
        reply = self.request("POST", "/api/auth/login", {"username": user, "password": password})
        if not isinstance(reply, dict) or not reply.get("key"):
            raise CheckFailed(f"POST /api/auth/login gave no token for {user!r}")
        self.token = reply["key"]


def multipart(fields: dict[str, str], files: dict[str, tuple[Path, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body (the browser's encoding of CVAT's "Data request"); files: field -> (path, name)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (path, filename) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def wait_for_functions(api: CvatApi, expected: list[str], deadline: float) -> list[dict]:
    """CVAT's function list once every expected id is in it (the dashboard may still be registering them)."""
    while True:
        functions = api.request("GET", "/api/lambda/functions")
        if not isinstance(functions, list):
            raise CheckFailed(f"GET /api/lambda/functions gave {type(functions).__name__}, not a list")
        listed_ids = {f.get("id") for f in functions}
        missing = [name for name in expected if name not in listed_ids]
        if not missing:
            return functions
        if time.monotonic() > deadline:
            listed = ", ".join(sorted(str(f.get("id")) for f in functions)) or "nothing"
            raise CheckFailed(f"CVAT does not list {', '.join(missing)} (it lists: {listed}); "
                              "check the Nuclio dashboard (docker logs nuclio) and `nuctl get functions`")
        time.sleep(5)


def wait_for_request(api: CvatApi, rq_id: str, deadline: float) -> None:
    while True:
        state = api.request("GET", f"/api/requests/{rq_id}")
        status = state.get("status") if isinstance(state, dict) else None
        if status == "finished":
            return
        if status == "failed":
            raise CheckFailed(f"CVAT could not create the task's data: {state.get('message', '')}".strip())
        if time.monotonic() > deadline:
            raise CheckFailed(f"CVAT's request {rq_id} is still {status!r} after the timeout")
        time.sleep(2)


def function_of_kind(functions: list[dict], function_id: str, kind: str) -> dict:
    """The listed function with that id (wait_for_functions made sure it is there), refused unless of that kind."""
    function = next(f for f in functions if f.get("id") == function_id)
    if function.get("kind") != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise CheckFailed(f"{function_id} is a {function.get('kind')}, not {article} {kind}")
    return function


def on_a_task(api: CvatApi, labels: list[dict], image: Path, deadline: float, call, frames: int = 1) -> object:
    """call(task, frame_meta) on a task holding image (as `frames` frames), deleted afterwards whatever happened."""
    task = api.request("POST", "/api/tasks", {"name": "labforge-check", "labels": labels})
    try:
        copies = {f"client_files[{i}]": (image, f"{i:03d}-{image.name}") for i in range(frames)}
        body, ctype = multipart({"image_quality": "95"}, copies)
        started = api.request("POST", f"/api/tasks/{task['id']}/data", data=body, content_type=ctype)
        wait_for_request(api, started["rq_id"], deadline)
        meta = api.request("GET", f"/api/tasks/{task['id']}/data/meta")
        return call(task, meta["frames"][0])
    finally:
        api.request("DELETE", f"/api/tasks/{task['id']}", ok=(204, 404))


def detect(api: CvatApi, function: dict, image: Path, expect_label: str | None, deadline: float) -> list[str]:
    """One real inference of a detector through CVAT; the labels of the shapes CVAT made of its answer."""
    labels = [{"name": lab["name"], "type": "any"} for lab in function.get("labels_v2") or [] if lab.get("type") != "skeleton"]
    if not labels:
        raise CheckFailed(f"{function['id']} declares no labels")

    def call(task: dict, _frame: dict) -> list[str]:
        answer = api.request("POST", f"/api/lambda/functions/{function['id']}", {"task": task["id"], "frame": 0})
        names = {lab["id"]: lab["name"] for lab in api.request("GET", f"/api/labels?task_id={task['id']}&page_size=1000")["results"]}
        return sorted(names.get(shape.get("label_id"), "?") for shape in (answer or {}).get("shapes", []))

    found = on_a_task(api, labels, image, deadline, call)
    if not found:
        raise CheckFailed(f"{function['id']} answered no annotation for {image.name} through CVAT")
    if expect_label and expect_label not in found:
        raise CheckFailed(f"{function['id']} found {', '.join(found)} in {image.name}, not {expect_label}")
    return found


def interact(api: CvatApi, function: dict, image: Path, deadline: float) -> str:
    """One click in the middle of the frame through CVAT, sent as the v2.51.0 UI sends it (obj_bbox [] when no
    box was drawn: cvat-ui tools-control.tsx at dfd505e7); CVAT passes the function's answer through."""

    def call(task: dict, frame: dict) -> object:
        click = [[frame["width"] / 2, frame["height"] / 2]]
        body = {"task": task["id"], "frame": 0, "pos_points": click, "neg_points": [], "obj_bbox": []}
        return api.request("POST", f"/api/lambda/functions/{function['id']}", body)

    answer = on_a_task(api, [{"name": "object", "type": "any"}], image, deadline, call)
    answer = answer if isinstance(answer, dict) else {}
    set_pixels = sum(1 for row in answer.get("mask") or [] for value in row if value)
    if not set_pixels and not answer.get("points"):
        raise CheckFailed(f"{function['id']} answered no mask pixel and no points for a click on {image.name} through CVAT")
    bounds = answer.get("bounds")
    what = f"a mask of {set_pixels} pixels" if set_pixels else f"a polygon of {len(answer['points'])} points"
    return what + (f" within {bounds}" if bounds else " (whole frame)")


def track(api: CvatApi, function: dict, image: Path, deadline: float, frames: int = 3) -> str:
    """A rectangle followed over `frames` frames through CVAT: the first call carries the shape, each next one only
    the states CVAT signed and returned (LambdaFunction.invoke, FunctionKind.TRACKER, at dfd505e7)."""

    def call(task: dict, frame: dict) -> str:
        w, h = frame["width"], frame["height"]
        shape = {"type": "rectangle", "points": [w / 4, h / 4, 3 * w / 4, 3 * h / 4]}
        url = f"/api/lambda/functions/{function['id']}"
        answer = api.request("POST", url, {"task": task["id"], "frame": 0, "shapes": [shape]})
        boxes = []
        for number in range(frames):
            shapes, states = (answer or {}).get("shapes"), (answer or {}).get("states")
            if not (isinstance(shapes, list) and len(shapes) == 1 and isinstance(shapes[0], dict)
                    and shapes[0].get("type") == "rectangle" and len(shapes[0].get("points") or []) == 4):
                raise CheckFailed(f"{function['id']} answered no rectangle on frame {number} through CVAT: {str(answer)[:200]}")
            if not (isinstance(states, list) and len(states) == 1 and isinstance(states[0], str)):
                raise CheckFailed(f"CVAT returned no signed state for frame {number}: {str(states)[:200]}")
            boxes.append(shapes[0]["points"])
            if number + 1 < frames:
                answer = api.request("POST", url, {"task": task["id"], "frame": number + 1, "states": states})
        return f"a rectangle on each of {frames} frames, the last {[round(v, 1) for v in boxes[-1]]}"

    return on_a_task(api, [{"name": "object", "type": "any"}], image, deadline, call, frames=frames)


def run(args: argparse.Namespace) -> list[str]:
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise CheckFailed(f"set {PASSWORD_ENV} to the CVAT admin's password")
    deadline = time.monotonic() + args.timeout
    api = CvatApi(args.url, ca_file=args.ca_file)
    api.login(args.user, password)
    report = [f"logged in to {api.url} as {args.user}"]
    expected = list(dict.fromkeys([*args.expect, *(f for f in (args.detector, args.interactor, args.tracker) if f)]))
    functions = wait_for_functions(api, expected, deadline)
    report.append(f"CVAT lists {len(functions)} functions, including every expected one: {', '.join(expected) or '-'}")
    if args.detector:
        function = function_of_kind(functions, args.detector, "detector")
        found = detect(api, function, args.image, args.expect_label, deadline)
        report.append(f"{args.detector} through CVAT on {args.image.name}: {len(found)} shapes ({', '.join(sorted(set(found)))})")
    if args.interactor:
        function = function_of_kind(functions, args.interactor, "interactor")
        report.append(f"{args.interactor} through CVAT, one click on {args.image.name}: {interact(api, function, args.image, deadline)}")
    if args.tracker:
        function = function_of_kind(functions, args.tracker, "tracker")
        report.append(f"{args.tracker} through CVAT on {args.image.name} as a 3-frame video: {track(api, function, args.image, deadline)}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labforge.tools.cvat_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="CVAT's address, e.g. http://192.168.56.24:8080")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--ca-file", type=Path, help="trust only this CA for an https --url (the lab CA's ca.crt)")
    parser.add_argument("--expect", action="append", default=[], metavar="ID", help="a function id CVAT must list (repeat)")
    parser.add_argument("--detector", metavar="ID", help="run this detector through CVAT on --image")
    parser.add_argument("--interactor", metavar="ID", help="click once on --image with this interactor through CVAT")
    parser.add_argument("--tracker", metavar="ID", help="follow a rectangle over --image repeated as 3 frames with this tracker")
    parser.add_argument("--image", type=Path, help="the image for --detector / --interactor / --tracker")
    parser.add_argument("--expect-label", help="a label the detector must find in --image")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for functions to appear and the task to be made")
    args = parser.parse_args(argv)
    if (args.detector or args.interactor or args.tracker) and not (args.image and args.image.is_file()):
        parser.error("--detector, --interactor and --tracker need --image, an existing image file")
    try:
        for line in run(args):
            print(f"[cvat-check] {line}")
    except CheckFailed as err:
        print(f"[cvat-check] FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
