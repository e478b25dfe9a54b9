"""TEST STAND-IN (labforge test stand-in): the one program (this package) of the stand-in images that carry CVAT
v2.51.0's image names in the test lab. Images cannot be pulled there, so each image runs this with its role:

    python3 /opt/labforge-standin/labforge_standin ROLE [the compose service's command ...]

Where data lives it is the real thing: cvat_db is PostgreSQL, and cvat_server's rows, media and key are real rows
and files in CVAT's volumes. The rest is stand-in.

One module per role:
- db.py: db (postgres:15-alpine), Debian's real PostgreSQL 15
- server.py: server (cvat/server), its stand-in endpoints, CVAT's lambda API and the CVAT API wing
- ui.py: ui (cvat/ui)
- traefik.py: traefik (traefik), routing by Docker labels, TLS from the file provider
- dashboard.py: dashboard (quay.io/nuclio/dashboard), GHSA-jx7q-cpg6-669g included
- function.py: function (Nuclio functions, run by the stand-in nuctl or dashboard)
- cvat_data.py: cvat_server's rows, media and key in CVAT's database and volumes
- docker_api.py: the Docker Engine API over the mounted socket (traefik's and the dashboard's)
- common.py: the HTTP server and handler every role serves with
- __main__.py: the role dispatch; the sleeper (everything else: Redis, kvrocks, OPA, analytics) idles until
  stopped.

Every role but db exits 0 on SIGTERM, as a container's main process should for `docker stop`; db is PostgreSQL
itself by then, stopped by SIGINT.
"""

MARK = "labforge test stand-in"
FUNCTION_IMAGE = "labforge-standin/function:latest"
