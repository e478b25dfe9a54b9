#!/usr/bin/python3
"""labforge-function-config: a function's Nuclio configuration with the host port labforge gave it, written as YAML
for `nuctl deploy --file`. Runs on the host (python3 and python3-yaml, a base package), since CVAT's functions'
YAMLs exist only there (in the checkout, or extracted from an older tag during the same run).

Why a port of our own: Nuclio 1.13's local platform publishes a function on the port its configuration gives, else
on the previous deployment's, else on a random one (pkg/platform/local/platform.go getFunctionHTTPPort, lines
1102-1127 at 59fa1656), and Docker hands random ports out of the kernel's ephemeral range (moby
libnetwork/portallocator: portallocator_linux.go reads /proc/sys/net/ipv4/ip_local_port_range, portallocator.go
RequestPortsInRange takes the first free one after the last it gave). After a reboot Docker gives the random ones
again, in whatever order containers start, so one function can take the port another one's configuration now
pins: that one stays in `error` ("port is already allocated") until someone redeploys it (cvat-ai/cvat#10307).
A port labforge chooses below that range (labforge.nuclio_functions.http_ports) is never handed out at random.

Where Nuclio reads the port: the first trigger of kind "http" with an attributes.port (functionconfig/types.go
GetHTTPPort, 458-490). A configuration with more than one HTTP trigger is refused by Nuclio (reader.go
validateConfigurationFileFunctionConfig), so there is one to set; one without any gets Nuclio's default HTTP trigger
(types.go GetDefaultHTTPTrigger, 232-238: name "default-http", one worker) with the port. The copy stays YAML, each
value with the type the YAML gave it: nuctl reads --file as YAML when it is not JSON (pkg/nuctl/command/common/
helpers.go GetUnmarshalFunc, 71-86) and passes the path on as spec.build.functionConfigPath (deploy.go 614), which
the builder reads again (build/builder.go readConfiguration, 448-462, sigs.k8s.io/yaml). JSON would not do: CVAT's
YAMLs give annotations unquoted numbers and booleans (`version: 2`, `startswith_box_optional: true` at dfd505e7),
which YAML turns into the strings of Nuclio's annotation map and JSON would refuse. Lines are never wrapped, and
the HTTP trigger's port is the only value that differs from the source.

    function-config SOURCE.yaml PORT DEST.yaml

DEST is written beside itself and renamed, so a killed run never leaves half a file for nuctl to read.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

DEFAULT_HTTP_TRIGGER = "default-http"


class ConfigProblem(ValueError):
    """A configuration labforge cannot give a port to; one line."""


def with_port(config: Any, port: int) -> dict:
    """A copy of the function configuration ``config`` whose one HTTP trigger listens on host port ``port``."""
    if not isinstance(config, dict) or not isinstance(config.get("metadata"), dict):
        raise ConfigProblem("not a Nuclio function configuration (no metadata)")
    found = copy.deepcopy(config)
    spec = found.setdefault("spec", {}) or {}
    found["spec"] = spec
    triggers = spec.get("triggers") or {}
    if not isinstance(triggers, dict):
        raise ConfigProblem("spec.triggers is not a mapping")
    http = [name for name, trigger in triggers.items() if isinstance(trigger, dict) and trigger.get("kind") == "http"]
    if len(http) > 1:
        raise ConfigProblem(f"{len(http)} HTTP triggers ({', '.join(sorted(http))}); Nuclio takes one")
    if not http:
        triggers[DEFAULT_HTTP_TRIGGER] = {"kind": "http", "name": DEFAULT_HTTP_TRIGGER, "numWorkers": 1}
        http = [DEFAULT_HTTP_TRIGGER]
    trigger = triggers[http[0]]
    attributes = trigger.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ConfigProblem(f"trigger {http[0]}'s attributes are not a mapping")
    trigger["attributes"] = {**attributes, "port": int(port)}
    spec["triggers"] = triggers
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit():
        print("usage: function-config SOURCE.yaml PORT DEST.yaml", file=sys.stderr)
        return 2
    import yaml  # python3-yaml: only the host program needs it

    source, port, dest = argv[0], int(argv[1]), argv[2]
    try:
        with open(source, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        text = yaml.safe_dump(with_port(config, port), sort_keys=False, default_flow_style=False, width=float("inf"),
                              allow_unicode=True)
    except (OSError, yaml.YAMLError, ConfigProblem) as exc:
        print(f"labforge: {source}: {exc}", file=sys.stderr)
        return 1
    partial = f"{dest}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(partial, 0o644)
    os.replace(partial, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
