"""labforge.tools.cvat_check, the Vagrant and GPU workflows' proof through CVAT, against a stand-in of CVAT v2.51.0's API
(testlab/standins/cvat_api.py, whose behaviour was checked against the real server: tests/e2e/cvat_check.sh)."""

from __future__ import annotations

import ssl
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from labforge import tls
from labforge.tools import cvat_check
from testlab.standins.cvat_api import CvatStandin
from tests.unit.test_tls import issued

PASSWORD = "correct horse battery staple 42"
YOLO = "openvino-omz-public-yolo-v3-tf"
SAM2 = "pth-labforge-sam2"


def write_png(path: Path, width: int, height: int) -> Path:
    rows = b"".join(b"\x00" + bytes([120, 60, 30]) * width for _ in range(height))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def detector(labels: list[str], found: list[str]):
    fields = {"kind": "detector", "name": "YOLO v3", "labels_v2": [{"name": n, "type": "rectangle"} for n in labels]}
    return fields, lambda _payload: [{"label": n, "points": [1, 2, 30, 40], "type": "rectangle", "confidence": "0.9"} for n in found]


def interactor(answer: dict):
    return {"kind": "interactor", "name": "SAM 2", "labels_v2": []}, lambda _payload: answer


def tracker(lose_on: int | None = None):
    """A tracker that moves the rectangle right by 2 px a frame, keeping its own count in the state."""
    def handle(payload: dict) -> dict:
        if payload["states"]:
            counts = [state["n"] + 1 for state in payload["states"]]
            shapes = [{"type": "rectangle", "points": [10 + 2 * n, 10, 30 + 2 * n, 30]} for n in counts]
            if lose_on in counts:
                shapes = [None]
        else:
            counts, shapes = [0] * len(payload["shapes"]), payload["shapes"]
        return {"shapes": shapes, "states": [{"n": n} for n in counts]}
    return {"kind": "tracker", "name": "SAM 2 tracker", "labels_v2": [], "supported_shape_types": ["rectangle"]}, handle


@pytest.fixture
def image(tmp_path) -> Path:
    return write_png(tmp_path / "photo.png", 64, 48)


@pytest.fixture
def cvat(request):
    standin = CvatStandin(PASSWORD, request.param)
    yield standin
    standin.close()


def check(monkeypatch, capsys, url: str, *args: str, password: str | None = PASSWORD) -> tuple[int, list[str], list[str]]:
    if password is None:
        monkeypatch.delenv(cvat_check.PASSWORD_ENV, raising=False)
    else:
        monkeypatch.setenv(cvat_check.PASSWORD_ENV, password)
    code = cvat_check.main(["--url", url, "--timeout", "10", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


FUNCTIONS = {YOLO: detector(["person", "car"], ["person", "person"]), "openvino-dextr": interactor({"points": [[1, 1]]})}


@pytest.mark.parametrize("cvat", [FUNCTIONS], indirect=True)
def test_functions_listed_and_a_detection_through_cvat(cvat, image, monkeypatch, capsys):
    code, out, err = check(monkeypatch, capsys, cvat.url, "--expect", "openvino-dextr", "--detector", YOLO,
                           "--image", str(image), "--expect-label", "person")
    assert (code, err) == (0, [])
    assert out[1] == f"[cvat-check] CVAT lists 2 functions, including every expected one: openvino-dextr, {YOLO}"
    assert out[2] == f"[cvat-check] {YOLO} through CVAT on photo.png: 2 shapes (person)"
    assert cvat.calls == [{"function": YOLO, "task": 1, "frame": 0}]
    assert cvat.deleted == [1] and not cvat.tasks  # the check leaves nothing behind


@pytest.mark.parametrize("cvat", [FUNCTIONS], indirect=True)
def test_a_function_cvat_does_not_list_fails_with_one_line(cvat, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--expect", "pth-facebookresearch-sam-vit-h", "--timeout", "0")
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"[cvat-check] FAILED: CVAT does not list pth-facebookresearch-sam-vit-h (it lists: openvino-dextr, {YOLO})")


@pytest.mark.parametrize("cvat", [{YOLO: detector(["person", "car"], [])}], indirect=True)
def test_a_detector_that_finds_nothing_fails_and_the_task_is_deleted(cvat, image, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--detector", YOLO, "--image", str(image))
    assert (code, err) == (1, [f"[cvat-check] FAILED: {YOLO} answered no annotation for photo.png through CVAT"])
    assert cvat.deleted == [1]


@pytest.mark.parametrize("cvat", [{YOLO: detector(["person", "car"], ["car"])}], indirect=True)
def test_the_expected_label_must_be_found(cvat, image, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--detector", YOLO, "--image", str(image), "--expect-label", "person")
    assert (code, err) == (1, [f"[cvat-check] FAILED: {YOLO} found car in photo.png, not person"])


@pytest.mark.parametrize("cvat", [{YOLO: detector(["person"], ["dog"])}], indirect=True)
def test_answers_outside_the_task_labels_are_dropped_as_cvat_drops_them(cvat, image, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--detector", YOLO, "--image", str(image))
    assert code == 1 and "answered no annotation" in err[0]


@pytest.mark.parametrize("cvat", [{SAM2: interactor({"mask": [[0, 1, 1], [1, 1, 0]], "bounds": [10, 20, 12, 21]})}], indirect=True)
def test_an_interactor_click_is_sent_as_the_ui_sends_it(cvat, image, monkeypatch, capsys):
    code, out, err = check(monkeypatch, capsys, cvat.url, "--interactor", SAM2, "--image", str(image))
    assert (code, err) == (0, [])
    assert out[-1] == f"[cvat-check] {SAM2} through CVAT, one click on photo.png: a mask of 4 pixels within [10, 20, 12, 21]"
    assert cvat.calls == [{"function": SAM2, "task": 1, "frame": 0, "pos_points": [[32.0, 24.0]], "neg_points": [], "obj_bbox": []}]


@pytest.mark.parametrize("cvat", [{SAM2: interactor({"mask": [[0]], "bounds": [0, 0, 0, 0], "points": []})}], indirect=True)
def test_an_empty_mask_is_not_a_pass(cvat, image, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--interactor", SAM2, "--image", str(image))
    assert code == 1 and "answered no mask pixel and no points" in err[0]


@pytest.mark.parametrize("cvat", [{YOLO: detector(["person"], ["person"])}], indirect=True)
def test_a_detector_given_as_interactor_is_refused(cvat, image, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--interactor", YOLO, "--image", str(image))
    assert (code, err) == (1, [f"[cvat-check] FAILED: {YOLO} is a detector, not an interactor"])


@pytest.mark.parametrize("cvat", [FUNCTIONS], indirect=True)
def test_wrong_password_and_missing_password_are_one_line(cvat, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, password="not it")
    assert code == 1 and err[0].startswith("[cvat-check] FAILED: POST /api/auth/login answered HTTP 400")
    code, _, err = check(monkeypatch, capsys, cvat.url, password=None)
    assert (code, err) == (1, [f"[cvat-check] FAILED: set {cvat_check.PASSWORD_ENV} to the CVAT admin's password"])


def test_cvat_not_answering_is_one_line(monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, "http://127.0.0.1:9")
    assert code == 1 and len(err) == 1 and err[0].startswith("[cvat-check] FAILED: CVAT does not answer at http://127.0.0.1:9")


def test_a_client_without_cvats_media_type_gets_406():
    """The stand-in renders only CVAT's media type, as the real server does (see its docstring)."""
    standin = CvatStandin(PASSWORD, FUNCTIONS)
    try:
        plain = urllib.request.Request(standin.url + "/api/auth/login", data=b"{}", method="POST",
                                       headers={"Accept": "application/json", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(plain, timeout=10)
        assert err.value.code == 406
    finally:
        standin.close()


TRACKER = "pth-labforge-sam2-tracker"


@pytest.mark.parametrize("cvat", [{TRACKER: tracker()}], indirect=True)
def test_a_tracker_follows_a_rectangle_over_three_frames_with_cvats_signed_states(cvat, image, monkeypatch, capsys):
    code, out, err = check(monkeypatch, capsys, cvat.url, "--tracker", TRACKER, "--image", str(image))
    assert (code, err) == (0, [])
    assert out[-1] == (f"[cvat-check] {TRACKER} through CVAT on photo.png as a 3-frame video: "
                       "a rectangle on each of 3 frames, the last [14, 10, 34, 30]")
    first, second, third = cvat.calls
    assert first == {"function": TRACKER, "task": 1, "frame": 0, "shapes": [{"type": "rectangle", "points": [16.0, 12.0, 48.0, 36.0]}]}
    assert set(second) == {"function", "task", "frame", "states"} and second["frame"] == 1 and third["frame"] == 2
    assert second["states"][0].startswith('{"n":0}:')  # CVAT's signed state, passed back as CVAT gave it
    assert cvat.deleted == [1]


@pytest.mark.parametrize("cvat", [{TRACKER: tracker(lose_on=2)}], indirect=True)
def test_a_tracker_that_stops_answering_a_rectangle_fails(cvat, image, monkeypatch, capsys):
    code, _, err = check(monkeypatch, capsys, cvat.url, "--tracker", TRACKER, "--image", str(image))
    assert code == 1 and err[0].startswith(f"[cvat-check] FAILED: {TRACKER} answered no rectangle on frame 2 through CVAT")


@pytest.mark.parametrize("cvat", [FUNCTIONS], indirect=True)
def test_https_with_the_lab_ca_and_refused_without_it(cvat, tmp_path, monkeypatch, capsys):
    """CVAT over TLS with a lab CA's certificate (cvat_tls = "lab-ca"): --ca-file trusts it, the system's store does not."""
    ca = tls.lab_ca(tmp_path / "lab-ca", names=["127.0.0.1"])
    directory, _, _ = issued(tmp_path, ca, "127.0.0.1")  # as the host's renewal program issues it
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    cvat.server.socket = context.wrap_socket(cvat.server.socket, server_side=True)
    url = cvat.url.replace("http://", "https://")
    code, out, err = check(monkeypatch, capsys, url, "--ca-file", str(tmp_path / "lab-ca" / tls.CA_CERT), "--expect", YOLO)
    assert (code, err) == (0, []), err
    assert out[0] == f"[cvat-check] logged in to {url} as admin"
    code, _, err = check(monkeypatch, capsys, url, "--expect", YOLO)
    assert code == 1 and len(err) == 1 and "CERTIFICATE_VERIFY_FAILED" in err[0], err
