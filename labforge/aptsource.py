"""deb822 `.sources` files written as whole files, so a second run compares bytes and changes nothing."""

from __future__ import annotations

from io import StringIO

from pyinfra.operations import files

from labforge import downloads

SOURCES_DIR = "/etc/apt/sources.list.d"
KEYRINGS_DIR = "/etc/apt/keyrings"


def render(uris: str, suites: str, signed_by: str, components: str = "", architectures: str = "") -> str:
    lines = ["Types: deb", f"URIs: {uris}", f"Suites: {suites}"]
    if components:
        lines.append(f"Components: {components}")
    if architectures:
        lines.append(f"Architectures: {architectures}")
    lines.append(f"Signed-By: {signed_by}")
    return "# Managed by labforge; edits are overwritten.\n" + "\n".join(lines) + "\n"


def source(name: str, legacy_list: str | None = None, **fields: str):
    """Write /etc/apt/sources.list.d/<name>.sources; drop the one-line `.list` a manual install left.

    A leftover `.list` for the same URL with another keyring makes apt fail with
    "Conflicting values set for option Signed-By", so it goes first. Returns the ops.
    """
    ops = []
    if legacy_list:
        ops.append(
            files.file(
                name=f"Remove manual apt source {legacy_list}",
                path=f"{SOURCES_DIR}/{legacy_list}",
                present=False,
            )
        )
    ops.append(
        files.put(
            name=f"apt source {name}.sources",
            src=StringIO(render(**fields)),
            dest=f"{SOURCES_DIR}/{name}.sources",
            mode="0644",
        )
    )
    return ops


def keyring(name: str) -> str:
    return f"{KEYRINGS_DIR}/{name}.asc"


def signed_repo(name: str, key_url: str, key_sha256: str, legacy_list: str, **fields: str) -> list:
    """A vendor repo: its armoured key (verified before it replaces the old one) in /etc/apt/keyrings and
    its deb822 source signed by that key. Returns the ops; the caller refreshes apt when they changed."""
    key = downloads.verified(name=f"apt key {keyring(name)}", src=key_url, dest=keyring(name), sha256=key_sha256, mode="0644")
    return [key, *source(name, legacy_list=legacy_list, signed_by=keyring(name), **fields)]
