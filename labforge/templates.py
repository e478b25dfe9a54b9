"""Rendering of the repository's templates/ (strict: a missing variable is an error, never an empty string)."""

from __future__ import annotations

import jinja2

from labforge.paths import TEMPLATES

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True)


def render(name: str, **values) -> str:
    return _ENV.get_template(name).render(**values)
