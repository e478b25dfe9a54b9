"""TEST STAND-IN (labforge test stand-in): the one program of the stand-in images that carry CVAT v2.51.0's image
names in the test lab. Images cannot be pulled there, so each image runs this with its role:

    python3 /labforge_standin.py ROLE [the compose service's command ...]

Where data lives it is the real thing: cvat_db is PostgreSQL, and cvat_server's rows, media and key are real rows
and files in CVAT's volumes. The rest is stand-in.

- db (postgres:15-alpine): Debian bookworm's real PostgreSQL 15 (postgresql-15, installed in the image from Debian's
  .debs: Dockerfile.postgresql), set up as the official image's docker-entrypoint.sh does it (docker-library/postgres
  15/bookworm/docker-entrypoint.sh, _main): with PGDATA (default /var/lib/postgresql/data, CVAT's cvat_db volume)
  owned by postgres and mode 0700; on a data directory without PG_VERSION, refused without POSTGRES_PASSWORD unless
  POSTGRES_HOST_AUTH_METHOD is trust (docker_verify_minimum_env), `initdb --username=$POSTGRES_USER --pwfile=...`
  as the postgres user (docker_init_database_dir), `host all all all <method>` appended to pg_hba.conf
  (pg_setup_hba_conf), a socket-only server started with pg_ctl, POSTGRES_DB created when missing
  (docker_setup_db), stopped with `pg_ctl -m fast`; a data directory that has a cluster is just started. Then
  postgres is exec'd as the postgres user (PID 1, as `exec gosu postgres ...` leaves it), listening on '*' (the
  image's postgresql.conf.sample, as the official Dockerfile seds it). CVAT's compose file gives POSTGRES_USER root,
  POSTGRES_DB cvat, POSTGRES_HOST_AUTH_METHOD trust. The image's STOPSIGNAL is SIGINT, the official image's:
  PostgreSQL's fast shutdown, so `docker stop` leaves a cleanly shut down cluster ("database system is shut down").
- server (cvat/server): `init run server` (v2.73.0: `init run server nginx`) creates keys/secret_key.py once as
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
  platform.go populateFunctionInvocationStatus). Every release CVAT pins (1.13.0, 1.16.3) carries GHSA-jx7q-cpg6-669g,
  and so does this stand-in: each read of a function (GET /api/functions, GET /api/functions/<name>, and an
  invocation's x-nuclio-function-name / x-nuclio-function-namespace, pkg/platform/types.go 160-165) runs
  `/bin/sh -c "/bin/cat <store>/functions/<namespace>/<name>.json"` through a shell with the name and namespace as
  they came (pkg/platform/local/client/store.go 311-333 and 388-392, nuclio 1.13.x commit 59fa1656; the path
  decoded as Go's net/http decodes URL.Path), in the container that holds the Docker socket.
- function (Nuclio functions, run by the stand-in nuctl or dashboard): answers POSTs on :8080 with
  {"function": <its name>, "received": <bytes>}, plus "points" (the clicks) for an interactor's payload.
- sleeper (everything else: Redis, kvrocks, OPA, analytics): idles until stopped.

Every role but db exits 0 on SIGTERM, as a container's main process should for `docker stop`; db is PostgreSQL
itself by then, stopped by SIGINT.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
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


def requests_quoted(path: str) -> str:
    """A URL path as the `requests` library sends it (requests.utils.requote_uri: these characters stay, the rest is
    %-escaped; a '#' starts the fragment, which is not sent)."""
    from urllib.parse import quote
    return quote(path.split("#", 1)[0], safe="!#$%&'()*+,/:;=?@[]~")


def http_json(method: str, url_host: str, port: int, path: str, body: bytes | None = None,
              headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    reply = conn.getresponse()
    return reply.status, reply.read()


# --- db (postgres:15-alpine): Debian's PostgreSQL 15, started as the official image's docker-entrypoint.sh does -----

PG_BIN = "/usr/lib/postgresql/15/bin"
HBA_TRUST = "\n# warning trust is enabled for all connections\n# see https://www.postgresql.org/docs/12/auth-trust.html\n"


def as_postgres(account: pwd.struct_passwd) -> None:
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)


def run_as_postgres(argv: list[str], account: pwd.struct_passwd, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, check=True, preexec_fn=lambda: as_postgres(account), **kw)


def postgres(args: list[str]) -> None:
    """docker-entrypoint.sh's _main for `postgres`: docker_setup_env, docker_create_db_directories, and on an empty
    data directory (no PG_VERSION) docker_verify_minimum_env, docker_init_database_dir, pg_setup_hba_conf,
    docker_temp_server_start, docker_setup_db, docker_temp_server_stop; then exec postgres as the postgres user."""
    pgdata = os.environ.get("PGDATA") or "/var/lib/postgresql/data"
    user = os.environ.get("POSTGRES_USER") or "postgres"
    database = os.environ.get("POSTGRES_DB") or user
    password = os.environ.get("POSTGRES_PASSWORD", "")
    auth = os.environ.get("POSTGRES_HOST_AUTH_METHOD", "")
    account = pwd.getpwnam("postgres")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:{PG_BIN}", "PGDATA": pgdata,
           "HOME": account.pw_dir, "LANG": os.environ.get("LANG") or "C.UTF-8"}
    os.makedirs(pgdata, exist_ok=True)
    os.chmod(pgdata, 0o700)
    os.makedirs("/var/run/postgresql", exist_ok=True)
    os.chmod("/var/run/postgresql", 0o3775)
    for top in (pgdata, "/var/run/postgresql"):
        for root, dirs, files in os.walk(top):
            for path in [root, *(os.path.join(root, n) for n in dirs + files)]:
                if os.lstat(path).st_uid != account.pw_uid:
                    os.lchown(path, account.pw_uid, -1)
    version = os.path.join(pgdata, "PG_VERSION")
    if not (os.path.exists(version) and os.path.getsize(version)):
        if not password and auth != "trust":
            print("Error: Database is uninitialized and superuser password is not specified.", file=sys.stderr)
            sys.exit(1)
        with tempfile.NamedTemporaryFile("w", dir="/var/run/postgresql") as pwfile:
            pwfile.write(password + "\n")  # initdb refuses a properly empty file
            pwfile.flush()
            os.chown(pwfile.name, account.pw_uid, -1)
            run_as_postgres(["initdb", f"--username={user}", f"--pwfile={pwfile.name}",
                             *os.environ.get("POSTGRES_INITDB_ARGS", "").split()], account, env)
        method = auth or subprocess.run(["postgres", "-C", "password_encryption"], env=env, capture_output=True,
                                        text=True, check=True, preexec_fn=lambda: as_postgres(account)).stdout.strip()
        with open(os.path.join(pgdata, "pg_hba.conf"), "a") as hba:
            hba.write((HBA_TRUST if method == "trust" else "\n") + f"host all all all {method}\n")
        port = os.environ.get("PGPORT", "5432")
        run_as_postgres(["pg_ctl", "-D", pgdata, "-o", f"-c listen_addresses='' -p {port}", "-w", "start"],
                        account, {**env, "PGUSER": user})
        psql = ["psql", "-v", "ON_ERROR_STOP=1", "--username", user, "--no-password", "--no-psqlrc", "--dbname",
                "postgres", "--set", f"db={database}"]
        local = {**env, "PGHOST": "", "PGHOSTADDR": "", "PGPASSWORD": password}
        exists = run_as_postgres([*psql, "--tuples-only"], account, local, capture_output=True, text=True,
                                 input="SELECT 1 FROM pg_database WHERE datname = :'db' ;\n").stdout.strip()
        if not exists:
            run_as_postgres(psql, account, local, input='CREATE DATABASE :"db" ;\n', text=True)
        run_as_postgres(["pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], account, env)
        print("\nPostgreSQL init process complete; ready for start up.\n", flush=True)
    else:
        print("\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n", flush=True)
    as_postgres(account)
    os.execvpe("postgres", ["postgres", *args], env)


# --- server: CVAT's database, data and keys, as far as the lab's tests write and read them -------------------------

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


def annotations() -> dict:
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
    return {"task_id": int(task), "job_id": int(job), "inserted": count, **annotations()}


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
                found = annotations()
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


class Ui(Quiet):
    def do_GET(self):
        self.answer(200, f"<html><body>CVAT UI ({MARK})</body></html>".encode(), "text/html")


class Function(Quiet):
    def do_POST(self):
        body = self.body()
        name = os.environ.get("LABFORGE_STANDIN_FUNCTION", "")
        answer = {"function": name, "received": len(body)}
        try:
            clicks = json.loads(body or b"{}").get("pos_points")
        except (ValueError, AttributeError):
            clicks = None
        if clicks:  # an interactor's payload (CVAT's LambdaFunction.invoke): the clicks back as a polygon
            answer["points"] = clicks
        self.answer(200, json.dumps(answer).encode())


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


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    role, args = sys.argv[1], sys.argv[2:]
    if role == "server" and args[:1] == ["init"] and "server" in args:  # `init run server` (v2.73.0: `... nginx`)
        ensure_secret_key()
        Schema.init()
        Server.api_url = cvat_api_wing()
        serve(8080, Server)
    elif role == "db":
        postgres(args[1:] if args[:1] == ["postgres"] else args)
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
