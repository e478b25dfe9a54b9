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
  before them expanded, as Docker expands them in the generated Dockerfile; spec.build.commands instead of them when
  it is set, lines ending in a backslash joined: builder.go getRuntimeProcessorDockerfileInfo, commandsToDirectives):
  URLs (a VCS requirement's repository without its @ref), and `pip install` requirements, looked up on the index the
  command or PIP_INDEX_URL names (PEP 503: <index>/<normalized name>/), none under --no-index or PIP_NO_INDEX;
- for CVAT's functions with a Dockerfile (serverless/deploy_cpu.sh builds it first): its FROM images and the URLs its
  ADD and RUN lines fetch, with ARG defaults and ENV values expanded. Images the deploy builds itself are not fetched.

A URL that still holds a `$` after expansion is left out: its value is known only inside the build. So is what the
files do not name (a tool that downloads by itself, a requirements file's contents, a heredoc or JSON-form RUN, an
image named only by `COPY --from`): the check never refuses on a guess, and a command it cannot split is read word by
word.

    function-inputs < {"config": YAML, "dockerfiles": [TEXT...], "built": [IMAGE...]}
    -> {"images": [...], "urls": [...]}
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from typing import Any

PYPI = "https://pypi.org/simple"
URL = re.compile(r"""https?://[^\s"'<>|;`\\()\[\]{}&]+""")
VCS = re.compile(r"(^|[\s=@])(git|hg|svn|bzr)\+$")  # what precedes a VCS requirement's URL
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")
SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "|&"}
# pip install's options that take a value (pip install --help, pip 24/25): their value is no requirement
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-t", "--target", "--platform",
                     "--python-version", "--implementation", "--abi", "--root", "--prefix", "--src", "--upgrade-strategy",
                     "-C", "--config-settings", "--global-option", "--build-option", "--install-option", "--no-binary",
                     "--only-binary", "--progress-bar", "--log", "--log-file", "--local-log", "--proxy", "--retries",
                     "--resume-retries", "--timeout", "--exists-action", "--trusted-host", "--cert", "--client-cert",
                     "--cache-dir", "--report", "--root-user-action", "--python", "--keyring-provider", "--use-feature",
                     "--use-deprecated", "--group", "--extra-index-url", "-f", "--find-links"}
SHORT_WITH_VALUE = set("rcetfCi")  # the last letter of a cluster such as -qr takes the next word
FILES = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".zip", ".txt", ".cfg", ".toml", ".in")
REQUIREMENT = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(\[[^\]]*\])?\s*([<>=!~;@].*)?$")
FALSE = {"", "0", "false", "no", "off"}


class InputsProblem(ValueError):
    """A configuration whose build inputs cannot be read; one line."""


def expand(text: str, values: dict[str, str]) -> str:
    """$NAME, ${NAME} and ${NAME:-default} replaced where NAME is known (or has a default); unknown ones stay, so that
    a URL holding one is left out."""
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        if name in values:
            return values[name]
        return match.group(2) if match.group(2) is not None else match.group(0)
    return VARIABLE.sub(one, text)


def words(command: str) -> list[str]:
    """A command's words as the shell reads them (quotes removed, `#` comments dropped, ; & | as words of their own);
    word by word when it cannot be split (an unbalanced quote)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:
        return re.findall(r"&&|\|\||[;&|]|[^\s;&|]+", command)


def assignments(text: str) -> dict[str, str]:
    """An ENV or ARG instruction's values: `A=1 B="x y"`, or the old `NAME value` form."""
    found = words(text)
    if len(found) >= 2 and "=" not in found[0]:
        return {found[0]: " ".join(found[1:])}
    return dict(word.split("=", 1) for word in found if "=" in word)


def segments(command: str) -> list[list[str]]:
    """A shell command's simple commands, as word lists, each with its leading NAME=value assignments first."""
    found, current = [], []
    for word in words(command):
        if word in SEPARATORS:
            found.append(current)
            current = []
        else:
            current.append(word)
    found.append(current)
    return [segment for segment in found if segment]


def normalized(name: str) -> str:
    """A project's name as PEP 503 indexes it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_arguments(words_: list[str]) -> list[str] | None:
    """What follows `install` in a `pip install` (pip, pip3, /path/pip3.10, python -m pip), else None."""
    if len(words_) >= 2 and re.fullmatch(r"(.*/)?pip[0-9.]*", words_[0]) and words_[1] == "install":
        return words_[2:]
    if len(words_) >= 4 and re.fullmatch(r"(.*/)?python[0-9.]*", words_[0]) and words_[1:4] == ["-m", "pip", "install"]:
        return words_[4:]
    return None


def url_of(word: str) -> str | None:
    """The URL a word fetches, if it names one whose value is known: a VCS requirement's repository without its
    @ref and #fragment, a percent sign only as an escape."""
    match = URL.search(word)
    if not match:
        return None
    url = match.group(0).rstrip(".,:")
    if VCS.search(word[: match.start()]):
        url = re.sub(r"@[^/@]*$", "", url.split("#", 1)[0])
    if "$" in url or re.search(r"%(?![0-9A-Fa-f]{2})", url):
        return None
    return url


def pip_lookups(segment: list[str], env: dict[str, str]) -> list[str]:
    """The index pages one `pip install` reads: <index>/<project>/ for each named requirement (on -i, else
    PIP_INDEX_URL, else PyPI), and a VCS or direct URL as itself. --no-index or PIP_NO_INDEX installs read no index."""
    env = dict(env)
    while segment and re.fullmatch(r"\w+=.*", segment[0]):
        name, value = segment[0].split("=", 1)
        env[name] = value
        segment = segment[1:]
    arguments = pip_arguments(segment)
    if arguments is None:
        return []
    index = env.get("PIP_INDEX_URL") or PYPI
    offline = env.get("PIP_NO_INDEX", "").lower() not in FALSE
    names: list[str] = []
    tokens = iter(arguments)
    for token in tokens:
        if token in ("-i", "--index-url"):
            index = next(tokens, index)
        elif token.startswith("--index-url="):
            index = token.split("=", 1)[1]
        elif token.startswith("-i") and len(token) > 2 and not token.startswith("--"):
            index = token[2:]
        elif token == "--no-index":
            offline = True
        elif token in PIP_VALUE_OPTIONS:
            next(tokens, None)
        elif re.fullmatch(r"-[A-Za-z]{2,}", token):
            if token[-1] in SHORT_WITH_VALUE:
                next(tokens, None)
        elif not (token.startswith("-") or ("/" in token and not URL.search(token)) or token in (".", "..")
                  or (token.lower().endswith(FILES) and not URL.search(token))):
            names.append(token)
    found = []
    for name in names:
        direct = url_of(name)
        if direct:
            found.append(direct)
            continue
        match = REQUIREMENT.match(name)
        if match and not offline:
            found.append(f"{index.rstrip('/')}/{normalized(match.group(1))}/")
    return found


def command_urls(command: str, env: dict[str, str] | None = None) -> list[str]:
    """What one shell command downloads: its pip lookups, and the URLs of its other words."""
    found: list[str] = []
    for segment in segments(command):
        lookups = pip_lookups(segment, env or {})
        found += lookups
        if pip_arguments([w for w in segment if not re.fullmatch(r"\w+=.*", w)]) is not None:
            continue  # pip's words are its lookups (an --extra-index-url is only a place to look)
        found += [url for url in map(url_of, segment) if url]
    return found


def keep(urls: list[str]) -> list[str]:
    """Each URL once, in the order the build meets them."""
    return list(dict.fromkeys(urls))


def build_commands(commands: list) -> list[str]:
    """spec.build.commands as Nuclio runs them: a line ending in a backslash continues on the next,
    `@nuclio.postCopy` only switches phase (builder.go commandsToDirectives)."""
    joined, current = [], ""
    for line in map(str, commands):
        if line.strip() == "@nuclio.postCopy":
            continue
        if line.endswith("\\"):
            current += line[:-1]
            continue
        joined.append(current + line)
        current = ""
    return joined + ([current] if current else [])


def directive_urls(config: dict) -> list[str]:
    build = (config.get("spec") or {}).get("build") or {}
    commands = build.get("commands") or []
    if commands:  # they replace the directives (builder.go getRuntimeProcessorDockerfileInfo)
        return [url for command in build_commands(list(commands)) for url in command_urls(command)]
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
                urls += command_urls(expand(value, values), values)
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


def instructions(text: str) -> list[str]:
    """A Dockerfile's instructions, continuation lines joined; comment and empty lines are dropped, inside a
    continuation too, as BuildKit's parser does."""
    found, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        found.append(current + stripped)
        current = ""
    return found + ([current] if current.strip() else [])


def dockerfile_inputs(text: str) -> tuple[list[str], list[str]]:
    """A Dockerfile's FROM images (not its own stages, compared case-insensitively) and the URLs its ADD and RUN
    lines fetch."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    urls: list[str] = []
    for line in instructions(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction in ("ARG", "ENV"):
            values.update({name: expand(text, values) for name, text in assignments(rest).items()})
        elif instruction == "FROM":
            found = [word for word in expand(rest, values).split() if not word.startswith("--")]
            if found and found[0].lower() not in stages and found[0] != "scratch" and "$" not in found[0]:
                images.append(found[0])
            if len(found) >= 3 and found[1].lower() == "as":
                stages.add(found[2].lower())
        elif instruction in ("ADD", "RUN"):
            urls += command_urls(expand(rest, values), values)
    return images, urls


def build_inputs(config: Any, dockerfiles: list[str], built: list[str]) -> dict[str, list[str]]:
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
    return {"images": [image for image in keep(images) if image not in built], "urls": keep(urls)}


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
