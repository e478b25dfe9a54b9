"""The documentation held to the repository, so it cannot drift:

- docs/settings.md lists every variable of group_data/*.py, names no other, and shows each default as group_data/
  has it (scalars exactly; lists and dicts by their items; a long string may be shortened to `head…tail`);
- README.md links every page of docs/, and every relative link of README.md and docs/*.md resolves, anchors included;
- every repository path README.md names (links, backticked paths such as `tests/host/` or `group_data/all.py`, the
  Layout map) is in the repository; docs/*.md are held to that for paths under this repository's own folders.
  Host paths (/etc/..., /opt/...) and paths in CVAT's or Nuclio's trees are not repository paths and are not checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from labforge import groupdata, settings
from labforge.paths import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
SETTINGS_PAGE = REPO / "docs" / "settings.md"

# Names the README gives in backticks that are not files of this repository, each for its reason.
NOT_IN_REPO = {
    "hosts.yml": "the user's hosts file, git-ignored",
    "labforge.lock": "written by the first run, committed by the user with the inventory",
    "run.json": "a run's --json output",
}

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
FILE_LIKE = re.compile(r"^[\w.-]+\.(py|ya?ml|md|sh|txt|toml|j2|lock|json|cfg|ini)$")
PATH_LIKE = re.compile(r"^\.?[\w.+-]+(/[\w.+-]+)*/?$")


# --- settings.md ---------------------------------------------------------------------------------------------------

def group_files() -> list[str]:
    return sorted(p.stem for p in groupdata.GROUP_DATA.glob("*.py"))


def variables() -> set[str]:
    """Every variable group_data/*.py defines: the names the deploy knows, less pyinfra's connection keys."""
    return set(settings.known()) - set(settings.CONNECTION_KEYS)


def defaults() -> dict[str, list]:
    """name -> its values: all.py's, then each group file's where it differs."""
    base = groupdata.load()
    values = {name: [value] for name, value in base.items()}
    for group in group_files():
        if group != "all":
            for name, value in groupdata.load(group).items():
                if name not in base or base[name] != value:
                    values.setdefault(name, []).append(value)
    return values


def settings_rows(text: str) -> dict[str, str]:
    """variable -> its default cell, from every table headed `| variable | default | ... |`; a name twice is an error."""
    rows: dict[str, str] = {}
    in_table = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            in_table = False
        elif cells[:2] == ["variable", "default"]:
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            name = re.fullmatch(r"`([a-z_][a-z0-9_]*)`", cells[0])
            assert name, f"docs/settings.md: a variable row must name one variable in backticks: {line}"
            assert name[1] not in rows, f"docs/settings.md lists {name[1]} twice"
            rows[name[1]] = cells[1]
    return rows


def leaves(value) -> list[str]:
    """What a default cell must show of a value: a scalar itself; a list's items; a dict's keys and leaves."""
    if isinstance(value, dict):
        return [str(k) for k in value] + [x for v in value.values() for x in leaves(v)]
    if isinstance(value, (list, tuple, set)):
        return [x for v in value for x in leaves(v)]
    return [str(value)]


def shown(leaf: str, cell: str) -> bool:
    if leaf in cell:
        return True
    if len(leaf) >= 16:  # a checksum shortened to head…tail
        return any(leaf.startswith(h) and leaf.endswith(t) and len(h) >= 4 and len(t) >= 4
                   for h, t in re.findall(r"([0-9A-Za-z]+)…([0-9A-Za-z]+)", cell))
    return False


def test_settings_page_lists_every_variable_and_no_other():
    documented = set(settings_rows(SETTINGS_PAGE.read_text()))
    known = variables()
    assert len(known) >= 40 and {"cvat_version", "gpu", "nuclio_functions"} <= known
    assert sorted(known - documented) == [], "variables of group_data/*.py missing from docs/settings.md"
    assert sorted(documented - known) == [], "docs/settings.md names variables group_data/*.py does not define"


def test_settings_page_shows_every_default_as_group_data_has_it():
    rows = settings_rows(SETTINGS_PAGE.read_text())
    wrong = {name: [leaf for value in values for leaf in leaves(value) if not shown(leaf, rows[name])]
             for name, values in defaults().items() if name in rows}
    assert {name: missing for name, missing in wrong.items() if missing} == {}


def test_the_settings_check_sees_a_missing_an_unknown_and_a_drifted_variable():
    text = SETTINGS_PAGE.read_text()
    planted = text.replace("| `cvat_dir` |", "| `cvat_dirr` |").replace("| `cvat_api_timeout` | `600` |", "| `cvat_api_timeout` | `60` |")
    rows = settings_rows(planted)
    assert "cvat_dir" in variables() - set(rows) and "cvat_dirr" in set(rows) - variables()
    assert not shown("600", rows["cvat_api_timeout"]) and shown("600", "`600`")
    assert shown("1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570", "`1500c1f5…a570`")
    assert not shown("1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570", "`1500c1f5…a571`")


# --- links and paths -----------------------------------------------------------------------------------------------

def repo_files() -> set[str]:
    """Files in the repository (tracked, or new and not ignored) and every folder above them, as 'a/b' and 'a/'."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    found = set()
    for name in filter(None, out):
        if (REPO / name).exists():
            parts = name.split("/")
            found.add(name)
            found |= {"/".join(parts[:i]) + "/" for i in range(1, len(parts))}
    return found


def in_repo(path: str, files: set[str]) -> bool:
    path = path.removeprefix("./")
    return path in files or path.rstrip("/") + "/" in files


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(m[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if file and (not dest.exists() or REPO.resolve() not in [dest, *dest.parents]):
            problems.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


def named_paths(text: str) -> list[str]:
    """Backticked tokens that look like relative paths (outside code blocks)."""
    found = []
    for token in CODE_SPAN.findall(FENCE.sub("", text)):
        token = token.strip()
        if token.startswith(("/", "~", "../")) or not PATH_LIKE.match(token):
            continue
        if "/" in token or FILE_LIKE.match(token.removeprefix("./")) or token.startswith("./"):
            found.append(token)
    return found


def layout_paths(text: str) -> list[str]:
    """The first word of every entry of the README's Layout map."""
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    block = FENCE.search(section)[0].splitlines()[1:-1]
    return [line.split()[0] for line in block if line.strip() and not line[0].isspace()]


def test_readme_links_every_docs_page():
    targets = {t.partition("#")[0] for t in LINK.findall(README.read_text())}
    assert len(DOCS) >= 10
    assert [p.name for p in DOCS if f"docs/{p.name}" not in targets] == []


def test_every_relative_link_resolves():
    assert {p.name: broken_links(p) for p in [README, *DOCS] if broken_links(p)} == {}


def test_every_path_the_readme_names_is_in_the_repository():
    files = repo_files()
    text = README.read_text()
    named = named_paths(text) + layout_paths(text)
    assert {"group_data/all.py", "hosts.example.yml", "docs/", "testlab/", ".github/workflows/"} <= set(named)
    assert [p for p in named if p not in NOT_IN_REPO and not in_repo(p, files)] == []


def test_docs_name_only_paths_that_exist_under_this_repositorys_folders():
    files = repo_files()
    own = {name.split("/")[0] for name in files if "/" in name}  # labforge, tasks, tests, testlab, files, docs, ...
    missing = {page.name: [p for p in named_paths(page.read_text())
                           if p.removeprefix("./").split("/")[0] in own and "/" in p and not in_repo(p, files)]
               for page in DOCS}
    assert {name: paths for name, paths in missing.items() if paths} == {}


def test_the_path_checks_see_a_missing_file_and_skip_host_paths(tmp_path):
    files = repo_files()
    text = "See `tests/host/`, `group_data/al.py`, `/etc/labforge/cvat.env`, `hosts.yml`, `./install.sh`, `a b/c`.\n"
    assert named_paths(text) == ["tests/host/", "group_data/al.py", "hosts.yml", "./install.sh"]
    assert [p for p in named_paths(text) if p not in NOT_IN_REPO and not in_repo(p, files)] == ["group_data/al.py"]
    page = tmp_path / "page.md"
    page.write_text("# A `title`: here\n[ok](#a-title-here) [gone](#nowhere) [web](https://example.com) [no](nofile.md)\n")
    assert broken_links(page) == ["#nowhere: no heading #nowhere in page.md", "nofile.md: no such file in the repository"]
