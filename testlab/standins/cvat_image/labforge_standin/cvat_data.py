"""TEST STAND-IN: cvat_server's data, as far as the lab's tests write and read it: real rows in CVAT's PostgreSQL
(the db role), real media and key files in CVAT's volumes, and the release's migrations.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from labforge_standin import MARK

DATA_DIR = "/home/django/data"
# CVAT keeps media under MEDIA_DATA_ROOT = data/data, a task data's under <data id>/raw (cvat/settings/base.py,
# cvat/apps/engine/models.py Data.get_upload_dirname, at dfd505e7)
MEDIA_DIR = os.path.join(DATA_DIR, "data")
KEYS_DIR = "/home/django/keys"
SECRET_KEY_FILE = os.path.join(KEYS_DIR, "secret_key.py")
SECRET_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS engine_task (
    id serial PRIMARY KEY, name varchar(256) NOT NULL, mode varchar(32) NOT NULL DEFAULT 'annotation',
    status varchar(32) NOT NULL DEFAULT 'annotation', created_date timestamptz NOT NULL DEFAULT now(),
    updated_date timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS engine_job (
    id serial PRIMARY KEY, task_id integer NOT NULL REFERENCES engine_task(id) ON DELETE CASCADE,
    status varchar(32) NOT NULL DEFAULT 'annotation', stage varchar(32) NOT NULL DEFAULT 'annotation',
    state varchar(32) NOT NULL DEFAULT 'new', updated_date timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS engine_labeledshape (
    id bigserial PRIMARY KEY, job_id integer NOT NULL REFERENCES engine_job(id) ON DELETE CASCADE,
    label_id integer, frame integer NOT NULL, "group" integer, type varchar(16) NOT NULL, occluded boolean NOT NULL,
    z_order integer NOT NULL, points text NOT NULL, rotation double precision NOT NULL, source varchar(16) NOT NULL);
CREATE INDEX IF NOT EXISTS engine_labeledshape_job_id ON engine_labeledshape (job_id);
"""
CHECKSUM = ("SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, job_id, frame, type, occluded, z_order, points, "
            "rotation, source), E'\\n' ORDER BY id), '')), (SELECT count(*) FROM engine_task), "
            "(SELECT count(*) FROM engine_job) FROM engine_labeledshape;\n")


class DatabaseError(RuntimeError):
    pass


def psql(sql: str, timeout: float = 300) -> list[list[str]]:
    """Run SQL in CVAT's database the way CVAT connects to it (cvat/settings/base.py at dfd505e7: CVAT_POSTGRES_HOST,
    _PORT, _DBNAME, _USER, _PASSWORD, defaults cvat_db, 5432, cvat, root, ''); rows of '|'-separated fields."""
    env = {**os.environ, "PGHOST": os.environ.get("CVAT_POSTGRES_HOST", "cvat_db"),
           "PGPORT": str(os.environ.get("CVAT_POSTGRES_PORT", "5432")),
           "PGDATABASE": os.environ.get("CVAT_POSTGRES_DBNAME", "cvat"),
           "PGUSER": os.environ.get("CVAT_POSTGRES_USER", "root"),
           "PGPASSWORD": os.environ.get("CVAT_POSTGRES_PASSWORD", ""), "PGAPPNAME": "cvat", "PGCONNECT_TIMEOUT": "5"}
    proc = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-1", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=sql,
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise DatabaseError(proc.stderr.strip() or f"psql exited {proc.returncode}")
    return [line.split("|") for line in proc.stdout.splitlines() if line]


# CVAT's `init` runs Django's migrations before `run server` (backend_entrypoint.sh cmd_init: `manage.py migrate` at
# dfd505e7, `django-admin migrate` at 7972cb4f2, under `set -eu`, so a failing migration ends the container). Here:
# the stand-in's migrations per release, recorded in django_migrations (app, name, applied) as Django does, each in
# its own transaction (Django wraps each migration in one on PostgreSQL). The release is the image's
# (LABFORGE_STANDIN_RELEASE, set per cvat/server tag when the images are built).
MIGRATIONS = [  # (app, name, SQL, the first release that has it)
    ("engine", "0001_labforge_standin_initial", SCHEMA, "v2.51.0"),
    # v2.73.0's: a new column, and a constraint that fails on data it does not allow (as a real migration can:
    # cvat-ai/cvat#10092 "Cannot upgrade past v2.39.0"): a task mode other than annotation/interpolation.
    ("engine", "0002_labforge_standin_v2_73", "ALTER TABLE engine_labeledshape ADD COLUMN score double precision; "
     "ALTER TABLE engine_task ADD CONSTRAINT engine_task_mode_known CHECK (mode IN ('annotation', 'interpolation'));",
     "v2.73.0"),
]
HOLD_MIGRATIONS = "/home/django/data/.labforge-standin-hold-migrations"  # tests/lab/test_upgrade.py: a long migration
DJANGO_MIGRATIONS = ("CREATE TABLE IF NOT EXISTS django_migrations (id bigserial PRIMARY KEY, app varchar(255) NOT NULL, "
                     "name varchar(255) NOT NULL, applied timestamptz NOT NULL);\n")


def release() -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", os.environ.get("LABFORGE_STANDIN_RELEASE", "v2.51.0"))[:3])


def migrations() -> list[tuple[str, str, str, str]]:
    """This release's migrations."""
    return [m for m in MIGRATIONS if tuple(int(x) for x in re.findall(r"\d+", m[3])[:3]) <= release()]


def applied() -> set[tuple[str, str]]:
    return {(app, name) for app, name in psql(DJANGO_MIGRATIONS + "SELECT app, name FROM django_migrations;")}


def migrate() -> None:
    """`manage.py migrate`: every migration of this release not applied yet, in order; raises DatabaseError."""
    done = applied()
    for app, name, sql, _ in migrations():
        if (app, name) in done:
            continue
        print(f"  Applying {app}.{name}...", flush=True)
        psql(f"{sql}\nINSERT INTO django_migrations (app, name, applied) VALUES ('{app}', '{name}', now());\n")
        print(f"  Applying {app}.{name}... OK", flush=True)


def unapplied() -> list[str]:
    """`manage.py migrate --check`'s question: which of this release's migrations are not applied."""
    done = applied()
    return [f"{app}.{name}" for app, name, _, _ in migrations() if (app, name) not in done]


class Schema:
    """CVAT's `init`: wait for cvat_db as wait-for-it does (no timeout), then migrate; a failing migration ends the
    process (exit 1), as `set -eu` ends backend_entrypoint.sh. Only then does the server answer."""

    ready = threading.Event()
    error = "not tried yet"

    @classmethod
    def init(cls) -> None:
        while True:
            try:
                psql("SELECT 1;")
                break
            except (DatabaseError, subprocess.TimeoutExpired, OSError) as exc:
                cls.error = str(exc)
                time.sleep(1)
        print("Operations to perform: Apply all migrations", flush=True)
        # A long migration (CVAT's take minutes to hours on a big database): while a test leaves HOLD_MIGRATIONS in
        # cvat_data, they wait, as Django's would wait on a big table; only when there is one to apply.
        while unapplied() and os.path.exists(HOLD_MIGRATIONS):
            time.sleep(1)
        try:
            migrate()
        except (DatabaseError, subprocess.TimeoutExpired) as exc:
            print(f"django.db.utils.IntegrityError: {str(exc).splitlines()[-1] if str(exc) else exc}", flush=True)
            sys.exit(1)
        print(f"{MARK}: migrations applied in database {os.environ.get('CVAT_POSTGRES_DBNAME', 'cvat')} at "
              f"{os.environ.get('CVAT_POSTGRES_HOST', 'cvat_db')}", flush=True)
        cls.ready.set()

    @classmethod
    def wait(cls, timeout: float = 20) -> None:
        if not cls.ready.wait(timeout):
            raise DatabaseError(f"CVAT's database is not ready: {cls.error}")


def ensure_secret_key() -> None:
    """CVAT's generate_secret_key (cvat/settings/base.py at dfd505e7): keys/secret_key.py holding
    SECRET_KEY = '<50 characters>', written to a temporary file and hard-linked into place, so the first
    writer wins and the key never changes afterwards."""
    if os.path.exists(SECRET_KEY_FILE):
        return
    os.makedirs(KEYS_DIR, exist_ok=True)
    with tempfile.NamedTemporaryFile("wt", dir=KEYS_DIR, prefix="secret_key.py.") as f:
        f.write("SECRET_KEY = '{}'\n".format("".join(secrets.choice(SECRET_KEY_CHARS) for _ in range(50))))
        f.flush()
        with contextlib.suppress(FileExistsError):  # somebody else created the key first: theirs is kept
            os.link(f.name, SECRET_KEY_FILE)


def annotation_rows() -> dict:
    (rows, checksum, tasks, jobs), = psql(CHECKSUM)
    return {"rows": int(rows), "checksum": checksum, "tasks": int(tasks), "jobs": int(jobs)}


def add_annotations(count: int) -> dict:
    """One task with one job holding `count` shapes (generate_series, one statement)."""
    sql = f"""
INSERT INTO engine_task (name) VALUES ('{MARK} task') RETURNING id AS task_id \\gset
INSERT INTO engine_job (task_id) VALUES (:task_id) RETURNING id AS job_id \\gset
INSERT INTO engine_labeledshape (job_id, label_id, frame, type, occluded, z_order, points, rotation, source)
    SELECT :job_id, 1 + g % 5, g / 10, 'rectangle', g % 7 = 0, 0,
           concat_ws(',', round((random() * 1000)::numeric, 2), round((random() * 1000)::numeric, 2),
                     round((random() * 1000)::numeric, 2), round((random() * 1000)::numeric, 2)),
           0, 'manual'
    FROM generate_series(0, {count - 1}) AS g;
SELECT :task_id, :job_id;
"""
    (task, job), = psql(sql)
    return {"task_id": int(task), "job_id": int(job), "inserted": count, **annotation_rows()}


def media_name(name: object) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/") or "\0" in name:
        raise ValueError("name must be a relative path inside the data directory")
    return name


def write_media(name: str, size: int | None, content: bytes | None) -> dict:
    path = os.path.join(MEDIA_DIR, media_name(name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    digest = hashlib.sha256()
    with open(path + ".partial", "wb") as out:
        if content is not None:
            out.write(content)
            digest.update(content)
        else:
            left = size or 0
            while left > 0:
                chunk = os.urandom(min(left, 1 << 20))
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(path + ".partial", path)
    return {"name": name, "path": path, "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


MEDIA_TASK = "labforge-standin task with media"  # the name of the tasks add_task makes (the others have no media)


def task_media(task: int) -> str:
    return os.path.join(MEDIA_DIR, str(task), "raw", "0.bin")


def add_task(size: int) -> dict:
    """Its media first (from the id the row will get), then the row: a task row never lacks its media."""
    (task,), = psql("SELECT nextval('engine_task_id_seq');")
    write_media(os.path.relpath(task_media(int(task)), MEDIA_DIR), size, None)
    psql(f"INSERT INTO engine_task (id, name) VALUES ({int(task)}, '{MEDIA_TASK}');")
    return {"id": int(task)}


def delete_task(task: int) -> dict:
    """The row first; its media directory once the delete committed (CVAT's order)."""
    psql(f"DELETE FROM engine_task WHERE id = {task};")
    shutil.rmtree(os.path.join(MEDIA_DIR, str(task)), ignore_errors=True)
    return {"id": task}


def list_tasks() -> dict:
    found = {}
    for (task,) in psql(f"SELECT id FROM engine_task WHERE name = '{MEDIA_TASK}' ORDER BY id;"):
        path = task_media(int(task))
        found[task] = os.path.getsize(path) if os.path.exists(path) else None
    return {"tasks": found}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_media() -> dict:
    found = {}
    for root, _, files in os.walk(MEDIA_DIR):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, MEDIA_DIR)] = {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}
    return {"directory": MEDIA_DIR, "files": dict(sorted(found.items()))}


def secret_key() -> dict:
    if not os.path.exists(SECRET_KEY_FILE):
        return {"path": SECRET_KEY_FILE, "exists": False}
    return {"path": SECRET_KEY_FILE, "exists": True, "sha256": file_sha256(SECRET_KEY_FILE)}
