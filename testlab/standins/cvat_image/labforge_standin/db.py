"""TEST STAND-IN, role db (postgres:15-alpine): Debian bookworm's real PostgreSQL 15 (postgresql-15, installed in the image from Debian's
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
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile

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
