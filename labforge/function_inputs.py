#!/usr/bin/python3
"""labforge-function-inputs: what building a Nuclio function fetches from the network, read from its configuration
and the Dockerfiles its deploy builds first, so that an upgrade can check all of it before CVAT stops (the upgrade
redeploys every function: the nuctl is part of each one's source hash). Runs on the host (python3 and python3-yaml,
a base package), where CVAT's function YAMLs are; the decisions are pure functions, tested in tests/unit.

What a build fetches, read from nuclio at 59fa1656 (the 1.13.x branch; 1.14.1 reads the same):
- the base image: spec.build.baseImage as given, else the runtime's `python:<version>`
  (pkg/processor/build/builder.go getProcessorDockerfileBaseImage, runtime/python/runtime.go
  GetProcessorDockerfileInfo); `docker build` pulls it when it is not here;
- the onbuild images (the handler builder and uhttpc): labforge.nuclio_functions.onbuild_images;
- whatever the directives' RUN commands download (spec.build.directives preCopy/postCopy, with the ENV directives
  before them expanded, as Docker expands them in the generated Dockerfile): URLs, and `pip install` requirements,
  looked up on the index the command names (PEP 503: <index>/<normalized name>/);
- for CVAT's functions with a Dockerfile (serverless/deploy_cpu.sh builds it first): its FROM images and the URLs its
  ADD and RUN lines fetch, with ARG defaults and ENV values expanded. Images the deploy builds itself are not fetched.

A URL that still holds a `$` after expansion is left out: its value is known only inside the build.

    function-inputs < {"config": YAML, "dockerfiles": [TEXT...], "built": [IMAGE...]}
    -> {"images": [...], "urls": [...], "python": true|false}
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from typing import Any

PYPI = "https://pypi.org/simple"
URL = re.compile(r"""https?://[^\s"'<>|;`\\)]+""")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
SEPARATORS = {"&&", "||", ";", "|", "&"}
# pip options that take a value (pip install --help): their value is no requirement
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-t", "--target", "--platform",
                     "--python-version", "--implementation", "--abi", "--root", "--prefix", "--src", "--upgrade-strategy",
                     "-C", "--config-settings", "--global-option", "--no-binary", "--only-binary", "--progress-bar",
                     "--log", "--proxy", "--retries", "--timeout", "--exists-action", "--trusted-host", "--cert",
                     "--client-cert", "--cache-dir", "--report", "--root-user-action", "--python", "--keyring-provider"}
REQUIREMENT = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(\[[^\]]*\])?\s*([<>=!~;@].*)?$")


class InputsProblem(ValueError):
    """A configuration whose build inputs cannot be read; one line."""


def expand(text: str, values: dict[str, str]) -> str:
    """$NAME and ${NAME} replaced where NAME is known; unknown ones stay, so that a URL holding one is left out."""
    return VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def assignments(text: str) -> dict[str, str]:
    """An ENV or ARG instruction's values: `A=1 B="x y"`, or the old `NAME value` form."""
    words = shlex.split(text, posix=True)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words if "=" in word)


def normalized(name: str) -> str:
    """A project's name as PEP 503 indexes it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def segments(command: str) -> list[list[str]]:
    """A shell command's simple commands, as word lists, with their leading NAME=value assignments dropped."""
    try:
        words = shlex.split(command, posix=True)
    except ValueError as exc:
        raise InputsProblem(f"cannot split the command {command[:80]!r}: {exc}") from None
    found, current = [], []
    for word in words:
        if word in SEPARATORS:
            found.append(current)
            current = []
        elif word.endswith(";"):
            current.append(word[:-1])
            found.append(current)
            current = []
        else:
            current.append(word)
    found.append(current)
    return [words[next((i for i, w in enumerate(words) if not re.fullmatch(r"\w+=.*", w)), len(words)):] for words in found]


def pip_arguments(words: list[str]) -> list[str] | None:
    """What follows `install` in a `pip install` (pip, pip3, /path/pip3.10, python -m pip), else None."""
    if len(words) >= 2 and re.fullmatch(r"(.*/)?pip[0-9.]*", words[0]) and words[1] == "install":
        return words[2:]
    if len(words) >= 4 and re.fullmatch(r"(.*/)?python[0-9.]*", words[0]) and words[1:4] == ["-m", "pip", "install"]:
        return words[4:]
    return None


def pip_lookups(command: str) -> list[str]:
    """The index pages each `pip install` in ``command`` reads: <index>/<project>/ for each named requirement, and a
    VCS or direct URL as itself. `--no-index` installs read no index."""
    found: list[str] = []
    for words in segments(command):
        arguments = pip_arguments(words)
        if arguments is None:
            continue
        index, names, offline = PYPI, [], False
        tokens = iter(arguments)
        for token in tokens:
            if token in ("-i", "--index-url"):
                index = next(tokens, PYPI)
            elif token.startswith("--index-url="):
                index = token.split("=", 1)[1]
            elif token == "--no-index":
                offline = True
            elif token in PIP_VALUE_OPTIONS or token in ("--extra-index-url", "-f", "--find-links"):
                next(tokens, None)
            elif not (token.startswith("-") or token in (".", "..") or token.startswith(("/", "./", "../"))):
                names.append(token)
        for name in names:
            direct = URL.search(name)
            if direct:
                found.append(direct.group(0))
                continue
            match = REQUIREMENT.match(name)
            if match and not offline:
                found.append(f"{index.rstrip('/')}/{normalized(match.group(1))}/")
    return found


def command_urls(command: str) -> list[str]:
    """What one shell command downloads: its URLs (pip's handled by pip_lookups) and its pip lookups."""
    lookups = pip_lookups(command)
    urls = [url for url in URL.findall(command) if not any(url in lookup or lookup in url for lookup in lookups)]
    return urls + [url for url in lookups if url not in urls]


def keep(urls: list[str]) -> list[str]:
    """Known URLs, each once: a `$` left after expansion is a value only the build knows."""
    seen: list[str] = []
    for url in urls:
        url = url.rstrip(".,")
        if "$" not in url and url not in seen:
            seen.append(url)
    return seen


def directive_urls(config: dict) -> list[str]:
    build = (config.get("spec") or {}).get("build") or {}
    directives = build.get("directives") or {}
    if not isinstance(directives, dict):
        raise InputsProblem("spec.build.directives is not a mapping")
    values: dict[str, str] = {}
    urls: list[str] = []
    for phase in ("preCopy", "postCopy"):
        for item in directives.get(phase) or []:
            if not isinstance(item, dict):
                raise InputsProblem(f"spec.build.directives.{phase} holds {item!r}, not a directive")
            kind, value = str(item.get("kind") or "").upper(), str(item.get("value") or "")
            if kind in ("ENV", "ARG"):
                values.update({name: expand(text, values) for name, text in assignments(value).items()})
            elif kind in ("RUN", "ADD"):
                urls += command_urls(expand(value, values))
    for command in build.get("commands") or []:  # spec.build.commands: RUN lines before the directives' postCopy
        urls += command_urls(str(command))
    return urls


def base_image(config: dict) -> str | None:
    """The image the function's processor image starts from, as Nuclio chooses it."""
    spec = config.get("spec") or {}
    given = (spec.get("build") or {}).get("baseImage")
    if given:
        return str(given)
    runtime = str(spec.get("runtime") or "")
    name, _, version = runtime.partition(":")
    return f"python:{version}" if name == "python" and version else None


def is_python(config: dict) -> bool:
    """Built with Nuclio's python onbuild image: a python runtime, or none given (Nuclio's default runtime)."""
    runtime = str((config.get("spec") or {}).get("runtime") or "python")
    return runtime.partition(":")[0] == "python"


def dockerfile_inputs(text: str) -> tuple[list[str], list[str]]:
    """A Dockerfile's FROM images (not its own stages) and the URLs its ADD and RUN lines fetch."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    values: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    urls: list[str] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction in ("ARG", "ENV"):
            values.update({name: expand(text, values) for name, text in assignments(rest).items()})
        elif instruction == "FROM":
            words = [word for word in expand(rest, values).split() if not word.startswith("--")]
            if words and words[0] not in stages and words[0] != "scratch":
                images.append(words[0])
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2])
        elif instruction in ("ADD", "RUN"):
            urls += command_urls(expand(rest, values))
    return images, urls


def build_inputs(config: Any, dockerfiles: list[str], built: list[str]) -> dict[str, Any]:
    """The images and URLs building this function fetches; ``built``: images its deploy builds itself."""
    if not isinstance(config, dict) or not isinstance(config.get("metadata"), dict):
        raise InputsProblem("not a Nuclio function configuration (no metadata)")
    images: list[str] = []
    urls = directive_urls(config)
    base = base_image(config)
    if base:
        images.append(base)
    for text in dockerfiles:
        found, fetched = dockerfile_inputs(text)
        images += found
        urls += fetched
    return {"images": [image for i, image in enumerate(images) if image not in built and image not in images[:i]],
            "urls": keep(urls), "python": is_python(config)}


def main() -> int:
    import yaml  # python3-yaml: only the host program needs it

    try:
        request = json.load(sys.stdin)
        config = yaml.safe_load(request["config"])
        answer = build_inputs(config, list(request.get("dockerfiles") or []), list(request.get("built") or []))
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        print(f"labforge: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
