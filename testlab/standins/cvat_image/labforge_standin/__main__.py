"""TEST STAND-IN: `python3 /opt/labforge-standin/labforge_standin ROLE [the compose service's command ...]` runs the
image's role (the package's docstring lists them)."""

from __future__ import annotations

import os
import signal
import sys

if __package__ in (None, ""):  # run as a directory: its parent holds the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labforge_standin.common import serve, stop
from labforge_standin.cvat_data import Schema, ensure_secret_key
from labforge_standin.dashboard import Dashboard
from labforge_standin.db import postgres
from labforge_standin.function import Function
from labforge_standin.server import Server, cvat_api_wing
from labforge_standin.traefik import traefik
from labforge_standin.ui import Ui


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
