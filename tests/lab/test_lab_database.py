"""Where CVAT's data lives, the lab runs the real thing: cvat_db is Debian's PostgreSQL 15 in the stand-in
postgres:15-alpine image, initialised from CVAT's compose settings (POSTGRES_USER root, POSTGRES_DB cvat, trust) with
its cluster in the cvat_db volume; the stand-in cvat_server writes rows there through psql, and media and its secret
key as files in the cvat_data and cvat_keys volumes (testlab/standins/cvat_image/labforge_standin/cvat_data.py).

These tests write through the stand-in's endpoints and look for the data where it lives: in PostgreSQL (psql inside
cvat_db), in the volumes' directories on the host, and again after the containers restart or stop.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time

import pytest

from labforge import compose
from tests.lab.conftest import STACK_NAME

NAME = STACK_NAME
API = "http://127.0.0.1:8080/api/labforge-standin"
ROWS = 100_000
PSQL = "docker exec cvat_db psql -X -A -t -v ON_ERROR_STOP=1 -U root -d cvat -c "
CHECKSUM = ("SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, job_id, frame, type, occluded, z_order, points, "
            "rotation, source), E'\\n' ORDER BY id), '')) FROM engine_labeledshape")
MEDIA = "1/raw/frame_000000.jpg"


@pytest.fixture(scope="module")
def host(stack_host):
    """The lab's host (tests/lab/conftest.py stack_host: CVAT's stand-in stack just brought up), first in its story."""
    return stack_host


def api(host, method: str, path: str, body: dict | None = None) -> dict:
    """The stand-in's endpoints through traefik, as a client on the host reaches CVAT's API."""
    data = f"-H 'Content-Type: application/json' --data {shlex.quote(json.dumps(body))} " if body is not None else ""
    run = host.ssh(f"curl -fsS --max-time 120 -X {method} -H 'Host: {NAME}.lab' {data}{API}{path}")
    return json.loads(run.stdout)


def in_postgres(host) -> dict:
    rows, checksum = host.ssh(PSQL + shlex.quote(CHECKSUM)).stdout.strip().split("|")
    return {"rows": int(rows), "checksum": checksum}


def volume(host, name: str):
    """The directory of the compose project's volume on the host, from the host's side of the lab."""
    mountpoint = host.ssh(f"docker volume inspect cvat_{name} --format '{{{{.Mountpoint}}}}'").stdout.strip()
    return host.root / mountpoint.lstrip("/")


def wait_for_api(host, timeout: float = 90) -> dict:
    """GET annotations until it answers 200 (503 while cvat_db or the schema is not there yet)."""
    deadline = time.monotonic() + timeout
    while True:
        run = host.ssh(f"curl -sS --max-time 60 -w '\\n%{{http_code}}' -H 'Host: {NAME}.lab' {API}/annotations", check=False)
        body, _, code = run.stdout.rpartition("\n")
        if code == "200":
            return json.loads(body)
        if time.monotonic() > deadline:
            logs = host.ssh("for c in cvat_db cvat_server; do echo \"== $c\"; docker logs --tail 30 $c 2>&1; done").stdout
            pytest.fail(f"the stand-in's API did not answer: {code} {body} {run.stderr}\n{logs}")
        time.sleep(1)


def compose_cmd(host, args: str) -> None:
    host.ssh(f"cd /opt/cvat && docker compose -p cvat {compose.compose_args()} {args}", timeout=180)


def test_rows_written_through_the_api_are_in_postgresql(host):
    assert wait_for_api(host)["rows"] == 0
    started = time.monotonic()
    written = api(host, "POST", "/annotations", {"count": ROWS})
    print(f"{ROWS} rows written in {time.monotonic() - started:.1f}s: {written}")
    assert written["inserted"] == ROWS and written["rows"] == ROWS
    read = api(host, "GET", "/annotations")
    assert read["rows"] == ROWS and read["checksum"] == written["checksum"]
    assert in_postgres(host) == {"rows": ROWS, "checksum": read["checksum"]}
    owner = host.ssh(PSQL + shlex.quote("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")).stdout
    assert owner.strip() == "root|t"
    version = host.ssh(PSQL + "'SHOW server_version'").stdout
    assert version.startswith("15.")


def test_media_and_the_secret_key_are_files_in_their_volumes(host):
    written = api(host, "POST", "/media", {"name": MEDIA, "bytes": 1 << 20})
    assert written["bytes"] == 1 << 20
    on_host = volume(host, "cvat_data") / "data" / MEDIA
    assert hashlib.sha256(on_host.read_bytes()).hexdigest() == written["sha256"]
    text = api(host, "POST", "/media", {"name": "1/raw/notes.txt", "content": "kept\n"})
    assert (volume(host, "cvat_data") / "data/1/raw/notes.txt").read_text() == "kept\n" and text["bytes"] == 5
    listed = api(host, "GET", "/media")["files"]
    assert listed[MEDIA]["sha256"] == written["sha256"]
    key = volume(host, "cvat_keys") / "secret_key.py"
    assert re.fullmatch(r"SECRET_KEY = '.{50}'\n", key.read_text())
    assert api(host, "GET", "/secret-key")["sha256"] == hashlib.sha256(key.read_bytes()).hexdigest()


def test_the_data_directory_is_a_real_cluster_in_the_cvat_db_volume(host):
    data = volume(host, "cvat_db")
    assert (data / "PG_VERSION").read_text() == "15\n"
    assert (data / "global/pg_control").is_file() and (data / "base").is_dir()
    assert "\nhost all all all trust\n" in (data / "pg_hba.conf").read_text()
    assert "postgres" in host.ssh("docker exec cvat_db stat -c %U /var/lib/postgresql/data").stdout
    listen = host.ssh(PSQL + "'SHOW listen_addresses'").stdout.strip()
    assert listen == "*"


def test_rows_media_and_key_survive_a_restart_of_cvat_db_and_cvat_server(host):
    before = api(host, "GET", "/annotations")
    media = api(host, "GET", "/media")
    key = api(host, "GET", "/secret-key")
    compose_cmd(host, "restart cvat_db cvat_server")
    assert wait_for_api(host) == before
    assert in_postgres(host) == {"rows": before["rows"], "checksum": before["checksum"]}
    assert api(host, "GET", "/media") == media
    assert api(host, "GET", "/secret-key") == key
    logs = host.ssh("docker logs cvat_db 2>&1").stdout
    assert logs.count("PostgreSQL init process complete") == 1
    assert "Database directory appears to contain a database; Skipping initialization" in logs


def test_docker_stop_shuts_postgresql_down_cleanly_even_with_a_session_open(host):
    """The image's stop signal is SIGINT (PostgreSQL's fast shutdown), as the official image's: an open session
    does not hold `docker stop` until its 10 seconds are up and the kill."""
    assert host.ssh("docker inspect cvat_db --format '{{.Config.StopSignal}}'").stdout.strip() == "SIGINT"
    host.ssh("docker exec -d cvat_db psql -U root -d cvat -c 'SELECT pg_sleep(600)'")
    time.sleep(1)
    started = time.monotonic()
    host.ssh("docker stop cvat_db")
    stopped = time.monotonic() - started
    state = json.loads(host.ssh("docker inspect cvat_db --format '{{json .State}}'").stdout)
    logs = host.ssh("docker logs --tail 20 cvat_db 2>&1").stdout
    print(f"docker stop cvat_db: {stopped:.1f}s, exit code {state['ExitCode']}\n{logs}")
    assert "received fast shutdown request" in logs and logs.rstrip().endswith("database system is shut down")
    assert state["ExitCode"] == 0 and stopped < 9
    control = host.ssh("docker run --rm --user postgres -v cvat_cvat_db:/var/lib/postgresql/data --entrypoint "
                       "pg_controldata postgres:15-alpine /var/lib/postgresql/data").stdout
    assert re.search(r"Database cluster state:\s+shut down\n", control), control
    host.ssh("docker start cvat_db")
    assert wait_for_api(host)["rows"] == ROWS
